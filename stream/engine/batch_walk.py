"""The engine's walk over one batch in stream order: pass 1 per record and the places pass 2 closes.

:meth:`stream.engine.core.Engine.process` documents what a batch does; this is its loop, in its own
module because it runs once per record and the native build (``stream.native``) compiles it, while
the :class:`~stream.engine.core.Engine` class itself, made of mixins, cannot be compiled. The loop
reads the engine's parts through the engine (its partitions, user records, pass 1, catalog flow,
timers and throttle); nothing here holds state between batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from stream.admission import admit_consent, admit_event
from stream.asks import BatchUser, Work
from stream.contract import ContractError
from stream.engine.ports import StateAccess
from stream.outcome import Inbound, Outcome, refused
from stream.partition_state import PartitionState
from stream.timers import REMINDER_AGAIN

if TYPE_CHECKING:
    from stream.engine.core import Engine


def minute(ts: float) -> int:
    """The minute of the event-time clock ``ts`` falls in (the throttle releases once per minute)."""
    return int(ts // 60.0)


def queued_may_cancel(part: PartitionState, now: float, work: Work) -> bool:
    """Whether a timer due at ``now`` is one the queued work may still cancel: a shopper's second
    reminder moment, while their first moment's decision (which cancels it when it waits) is
    queued. Pass 2 must run first, as it would have at batch size 1 (the first moment firing late
    in a quiet partition, the second can fall due before the next minute)."""
    for user_id in work.rearming.get(part.partition, ()):
        again = part.timers.get(user_id, "reminder", REMINDER_AGAIN)
        if again is not None and again.due_at <= now:
            return True
    return False


def walk_batch(engine: Engine, records: Sequence[Inbound], txn: StateAccess, out: Outcome) -> None:
    """Pass 1 over ``records`` in stream order, closing pass 2 where the stream requires it, then
    pass 2 of what is left and the staging of every user record the batch touched (see
    :meth:`stream.engine.core.Engine.process`)."""
    stage = out.stage_seconds
    settings = engine.settings
    consent_topic = settings.topics.consent
    event_clock = settings.worker.clock == "event"
    parts = engine.parts
    users: dict[str, BatchUser] = {}  # the batch's user records, shared by every piece of work
    work = Work(users)
    for rec in records:
        part: PartitionState | None = parts.get(rec.partition)
        if part is None:
            part = engine.part(rec.partition)
        part.observe_offset(rec.topic, rec.offset)
        try:
            if rec.topic == consent_topic:
                consent = admit_consent(rec.key, rec.partition, rec.value, settings, engine.wall_clock())
                if consent is None:  # a tombstone: erase the user (what came before is decided first)
                    assert rec.key is not None  # admission refuses a tombstone without a key
                    engine._resolve(work, out)
                    work = Work(users)
                    erased = rec.key.decode("utf-8")
                    gone = users.pop(erased, None)  # its record is not staged at the batch's end
                    engine.users.erase(txn, rec.partition, erased, gone, engine.now(rec.partition))
                    out.erasures += 1
                    continue
                user = engine.users.load(txn, rec.partition, consent.user_id, work.users)
                if work.has_work(consent.user_id):
                    # The user's queued decisions and releases were made under the consent before
                    # this record (an opt-out also drops held pushes): they run first.
                    engine._resolve(work, out)
                    work = Work(users)
                if user.state.policy.apply_consent(consent):
                    user.dirty = True
                    if not consent.opted_in:
                        part.timers.cancel_user(consent.user_id)
                        # Pushes waiting for the throttle's budget would go out after the opt-out.
                        for push in part.throttle.drop_user(consent.user_id):
                            out.suppressions[(push.trigger, "no_consent")] += 1
                out.consent_updates += 1
                continue
            t = perf_counter()
            event = admit_event(rec.key, rec.partition, rec.value, settings, engine.wall_clock())
            stage["parse"] += perf_counter() - t
        except ContractError as exc:
            out.dead_letters.append(refused(rec, exc, settings))
            out.events[("unknown", "dead_letter")] += 1
            continue
        new_minute = part.throttle.enabled and minute(event.ts) > minute(part.watermark)
        # The clock reaches the earliest time a timer that the partition's queued policy work may
        # schedule (a hold's release, on a whole minute) can fall due (Work.first_due): it must
        # exist before the clock passes it.
        timers_due = event.ts >= work.first_due.get(rec.partition, math.inf)
        if part.learning.enters_new_epoch(max(part.watermark, event.ts)) or new_minute or timers_due:
            # Decisions before this input read the old epoch's outcome estimates (stream.learning),
            # took their throttle budget (stream.throttle) and scheduled their timers before anything
            # is released.
            work = engine._close(work, out)
        # Read before the clock moves. (The partition's own fields where they answer: the engine's
        # methods run as bytecode, stream.native, and this runs per event.)
        announced_until = part.catalog_until
        assert announced_until is not None  # set when the engine created or adopted the partition
        moved = part.advance(event.ts)
        part.learning.advance(part.watermark)
        if new_minute:
            engine._release_throttled(part, out, txn, work.users)
        if moved:
            now = part.watermark if event_clock else engine.now(rec.partition)
            passed = engine.catalog.changes_between(announced_until, now)
            part.catalog_until = now
            # Catalog changes the clock passed are announced here, in stream order, after what came
            # before (its interest updates included) and before the timers due now. A change that
            # reaches no one (no ask, no timer), now or after the queued decisions, needs no close:
            # in a replay the clock passes a change at nearly every event, and most reach no one.
            if passed:
                t = perf_counter()
                reaches = engine._announce_reaches_anyone(rec.partition, passed, work)
                stage["announce"] += perf_counter() - t
                if reaches:
                    engine._resolve(work, out)
                    work = Work(users)
                    t = perf_counter()
                    engine._announce(txn, rec.partition, passed, out, users)
                    stage["announce"] += perf_counter() - t
            if event_clock:
                # Event time: what fell due up to this event's time happens before it, in stream order.
                if queued_may_cancel(part, part.watermark, work):
                    work = engine._close(work, out)
                if part.timers.may_be_due(part.watermark):  # seldom: the clock moves at every event
                    t = perf_counter()
                    engine._fire_due(txn, part, part.watermark, work, out)
                    stage["timers"] += perf_counter() - t
        t = perf_counter()
        user = engine.users.load(txn, rec.partition, event.user_id, work.users)
        t1 = perf_counter()
        stage["state_read"] += t1 - t
        if work.has_work(event.user_id) and engine._replaces_facts(user, event):
            engine._resolve(work, out)
            work = Work(users)
        candidates = stage["candidates"]
        engine.users.expire_if_inactive(user, part.watermark)  # the sweep's clock (UserRecords.expired)
        engine.intake.bookkeep(user, event, work, out)
        stage["bookkeeping"] += perf_counter() - t1 - (stage["candidates"] - candidates)
    engine._resolve(work, out)
    engine._save(txn, users.values(), out)
