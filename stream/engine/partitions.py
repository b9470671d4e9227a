"""The engine's partitions: recovery, ownership and the input offsets applied to each.

:class:`PartitionsMixin` gives :class:`stream.engine.core.Engine` the partition lifecycle: a recovered
partition's shared state read from its store (:meth:`~PartitionsMixin.load_partition`, safe in a
worker thread), adopted, released on a rebalance, the pushes emitted just before a crash reconciled
with it, and the input offsets that make a redelivery a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stream.asks import BatchUser
from stream.contract import Push
from stream.engine.ports import PartitionRows, StateAccess
from stream.engine.users import UserRecords
from stream.outcome import Inbound
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig
from stream.push_records import record_push
from stream.settings import Settings


class PartitionsMixin:
    """Engine mixin: load, adopt and release partitions; their applied offsets; recovered pushes."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    settings: Settings
    cfg: PolicyConfig
    parts: dict[int, PartitionState]
    owned: set[int]
    users: UserRecords
    part: Callable[[int], PartitionState]
    now: Callable[[int], float]

    def mark_applied(self, rec: Inbound, txn: StateAccess) -> None:
        """Record ``rec`` as applied without applying it (it was dead-lettered by the caller)."""
        part = self.part(rec.partition)
        part.observe_offset(rec.topic, rec.offset)
        self.users.stage_rows(txn, rec.partition)

    def applied(self, rec: Inbound) -> bool:
        """Whether ``rec`` was already applied to its partition's state (a redelivery to skip).

        The partition's input offsets are written with the states of the batch that applied them,
        so this holds across rebalances, restarts and moves to another worker.
        """
        part = self.parts.get(rec.partition)
        return part is not None and part.applied(rec.topic, rec.offset)

    def load_partition(self, partition: int, store: PartitionRows) -> PartitionState:
        """Read a recovered partition's shared state from its store.

        Safe in a worker thread: it reads only ``store`` and touches nothing of the engine.
        """
        state, users = PartitionState.load(
            partition, self.cfg, store.partition_rows(), store.items(), self.settings.topics.partitions
        )
        state.users_loaded = users
        return state

    def adopt(self, partition: int, loaded: PartitionState) -> None:
        """Take ownership of a loaded partition (quick, on the event loop).

        Catalog changes after its stored announced-until are announced as its clock passes them; one
        stored without it (new, or written before it was stored) starts at its clock.
        """
        self.parts[partition] = loaded
        self.owned.add(partition)
        if loaded.catalog_until is None:
            loaded.catalog_until = self.now(partition)

    def release(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their state is in the store and changelog)."""
        for partition in partitions:
            self.owned.discard(partition)
            self.parts.pop(partition, None)

    def apply_recovered_pushes(self, partition: int, pushes: Iterable[Push], txn: StateAccess) -> int:
        """Record pushes found on the pushes topic that the recovered state does not know yet.

        They were emitted just before a crash, after the state's last changelog write: without this,
        redelivered events could emit them a second time. Each is marked ``recovered``: the push on the
        topic does not carry its decision context, so the decision that emitted it, made again on the
        redelivered input, completes the record (``Decider.apply``). One still waiting in the recovered
        throttle's queue was released then: it waits on marked as out (``PushThrottle.mark_sent``), so
        the redelivered input's release takes its budget and moves its record (kept since its
        decision) to when it went out, as in the run without the crash, and sends nothing.
        """
        if partition not in self.parts and partition not in self.owned:
            raise RuntimeError(f"partition {partition} must be adopted before its pushes are reconciled")
        users: dict[str, BatchUser] = {}
        n = 0
        throttle = self.part(partition).throttle
        for push in pushes:
            if throttle.mark_sent(push.push_id):  # its record moves when it is released again
                n += 1
                continue
            user = self.users.load(txn, partition, push.user_id, users)
            if any(r.push_id == push.push_id for r in user.state.policy.pushes):
                continue
            record_push(user.state.policy, push, self.cfg, prune=False).recovered = True
            user.dirty = True
            n += 1
        self.users.save(txn, users.values())
        return n
