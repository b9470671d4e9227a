"""Records redelivered after a rebalance or a crash are recognised by offset: one dead letter each.

faust forgets the offsets acked since its last commit at every revocation, so the member that gets a
partition (the same one or another) reads up to a second of records again. Valid events were already
deduplicated by ``event_id``, but a malformed record has no id: it was dead-lettered once per
redelivery (observed in tests/integration/test_scale_out.py: two records dead-lettered twice after a
fourth worker joined). The partition state now keeps the input offsets it applied, persisted with
the batch's states, and the worker skips records at or below them.
"""

from __future__ import annotations

from stream.engine import Inbound
from stream.partition_state import META_ROW
from tests.stream.fakes import PARTITIONS, T0, DictState, PartitionView, ev, make_engine, record


def test_applied_offsets_survive_a_restart_and_cover_dead_lettered_records() -> None:
    engine, store = make_engine(), DictState()
    good = ev("e1", "u1", "view", "i1", T0)
    bad = record(b'{"event_id": "broken", "user_id": ', "u1")
    out = engine.process([good, bad], store)
    assert len(out.dead_letters) == 1
    p = good.partition
    meta = store.get(p, META_ROW)
    assert meta is not None and b'"o":{"events":%d}' % bad.offset in meta  # persisted with the batch

    # A restarted (or another) worker recovers the partition from the store / changelog.
    recovered = make_engine(engine.settings)
    for q in range(PARTITIONS):
        recovered.adopt(q, recovered.load_partition(q, PartitionView(store, q)))
    redelivered = [good, bad]
    assert [r for r in redelivered if not recovered.applied(r)] == []  # the worker skips both
    later = record(b"garbage", "u1")
    assert not recovered.applied(later)
    # Offsets are per topic: consent has its own.
    consent = Inbound("consent", p, 0, b"u1", None)
    assert not recovered.applied(consent)
