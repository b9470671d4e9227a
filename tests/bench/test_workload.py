"""The throughput benchmark's event orders (``benchmarks/throughput/workload.py``)."""

from __future__ import annotations

from benchmarks.throughput.workload import Workload, spread_users


def test_spread_users_keeps_each_users_order_and_takes_one_event_of_each_user_per_round() -> None:
    keys = [b"a", b"a", b"b", b"a", b"c", b"b"]
    events = [(key, b'{"n": %d}' % i) for i, key in enumerate(keys)]
    catalog = [(b"i1", b"{}")]
    spread = spread_users(Workload(events, catalog, 4, 2))
    assert [value for _, value in spread.events] == [
        b'{"n": 0}',  # round 1: a, b, c in their first events' order
        b'{"n": 2}',
        b'{"n": 4}',
        b'{"n": 1}',  # round 2: a, b
        b'{"n": 5}',
        b'{"n": 3}',  # round 3: a
    ]
    assert spread.catalog == catalog and (spread.n_dataset, spread.n_simulated) == (4, 2)
    assert sorted(spread.events) == sorted(events)
