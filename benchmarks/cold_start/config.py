"""The cold-items benchmark's fixed settings: the cut-off K, the trending tie-break's weight, the
target groups, the two datasets' names, the simulated shop and its cold hold-out (share and seed),
and ``Event``, the (time, session, event type index, item, category) tuple every part passes around.
"""

from __future__ import annotations

from stream.simulator import SimConfig

K = 20
TIE_EPS = 1e-4
GROUPS = ("cold", "cold, not a repeat", "warm", "warm, not in the model")
RETAILROCKET, SIM = "retailrocket-sample", "simulated shop"
SIM_CONFIG = SimConfig(seed=11, n_users=5_000, n_items=3_000)
SIM_EVENTS = 100_000
COLD_SHARE = 0.1
COLD_SEED = 11
# A case: (time, session, event type index, item, category).
Event = tuple[float, str, int, str, str]
