"""A simulated shop: the pure, seeded world model behind the demo, the benchmarks and the demo training data.

Everything here runs on a simulated clock (epoch seconds), so a day of shopping can be generated in
seconds. The world knows each shopper's TRUE interest (latent taste vectors, a current shopping "need",
price sensitivity); it never looks at anything Kairos computes. Pushes delivered to it are answered
from that ground truth, fatigue and the local time of day only (see ``docs/simulator.md`` for the
formulas), and it keeps ground-truth counters so a benchmark can compare a treatment group with a
holdout group.

No I/O and no wall clock here: :mod:`stream.sim_runner` is the Kafka edge.

The parts, one module each: the settings and the world's constants (``config``), what the parts share
(``shared``: local time, random streams, the event queue's kinds, the counters), the world and its
public API (``world``), the shoppers' organic behaviour and the catalog's own processes
(``shopping``), the response to a delivered push (``push_response``), what those two share (``parts``),
and event files (``export``).
"""

from stream.simulator.config import (
    BROWSE_SHARPNESS,
    CART_BIAS,
    CHECKOUT_BIAS,
    CHECKOUT_INTEREST,
    DAY,
    DEVICES,
    DIURNAL,
    HOUR,
    TIME_ZONES,
    WORLD_VERSION,
    Message,
    SimConfig,
)
from stream.simulator.export import generate_events, summary_json, write_jsonl
from stream.simulator.shared import ResponseProbabilities, in_quiet_hours, local_hour, night_weight
from stream.simulator.world import World

__all__ = [
    "BROWSE_SHARPNESS",
    "CART_BIAS",
    "CHECKOUT_BIAS",
    "CHECKOUT_INTEREST",
    "DAY",
    "DEVICES",
    "DIURNAL",
    "HOUR",
    "TIME_ZONES",
    "WORLD_VERSION",
    "Message",
    "ResponseProbabilities",
    "SimConfig",
    "World",
    "generate_events",
    "in_quiet_hours",
    "local_hour",
    "night_weight",
    "summary_json",
    "write_jsonl",
]
