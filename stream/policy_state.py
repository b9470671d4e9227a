"""A user's push history and consent, as the policy keeps it in the user's record.

:class:`UserPolicyState` is part of the user record (``stream/state.py``): the pushes sent (for caps,
gaps and repeats), those held through quiet hours or for the shopper's usual hour, consent, the time
zone, the responsiveness offset and the engagement hours. Pure data with its own (compact) encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.contract import ConsentUpdate, Push
from stream.record_rows import PolicyRecord, PushRecord

__all__ = ["HeldPush", "PushRecord", "UserPolicyState", "seen_at", "unmet"]


# A push read back after a crash is unmet (see :func:`unmet`) at most this long after it went out.
# Its decision, made again on the redelivered input, comes sooner unless that input's events are an
# hour out of time order; one never met (a model or settings changed across the restart, and the
# redelivered input decided otherwise) counts for the caps, gap and feedback from then on.
UNMET_RECOVERED_SECONDS = 3_600.0


def unmet(record: PushRecord, now: float) -> bool:
    """Whether a decision or input at ``now`` must not see the record: a push read back after a crash
    (``recovered``) whose own decision, made again on the redelivered input, has not met it yet. In the
    run without the crash that decision had not been made yet, wherever the stream was (its events
    need not come in time order), so it had no record to count or to answer feedback."""
    return record.recovered and now < record.created_at + UNMET_RECOVERED_SECONDS


def seen_at(records: Sequence[PushRecord], now: float) -> Sequence[PushRecord]:
    """The push records a decision at ``now`` sees: those not :func:`unmet`. Without a recovered
    record (nearly always) ``records`` itself, not a copy: this runs on every decision."""
    if not any(r.recovered for r in records):
        return records
    return [r for r in records if not unmet(r, now)]


@dataclass
class HeldPush:
    """A push waiting for the end of the user's quiet hours."""

    push: Push
    release_at: float
    context: str = ""  # the decision context, for the outcome estimates once it is released


@dataclass(init=False)
class UserPolicyState:
    """Per-user policy state, stored with the user's state (bounded; see :meth:`to_dict`)."""

    opted_in: bool | None = None
    consent_ts: float | None = None
    time_zone: str | None = None
    pushes: list[PushRecord] = field(default_factory=list)  # oldest first, bounded by max_push_records
    held: list[HeldPush] = field(default_factory=list)  # bounded by max_held
    responsiveness: float = 0.0  # threshold offset, see stream.feedback
    responsiveness_ts: float | None = None  # when the offset was last changed (it decays from there)
    send_hours: list[float | int] | None = None  # stream.send_time.EngagementHours.to_list()

    def __init__(
        self,
        opted_in: bool | None = None,
        consent_ts: float | None = None,
        time_zone: str | None = None,
        pushes: list[PushRecord] | None = None,
        held: list[HeldPush] | None = None,
        responsiveness: float = 0.0,
        responsiveness_ts: float | None = None,
        send_hours: list[float | int] | None = None,
    ) -> None:
        self.opted_in = opted_in
        self.consent_ts = consent_ts
        self.time_zone = time_zone
        self.pushes = [] if pushes is None else pushes
        self.held = [] if held is None else held
        self.responsiveness = responsiveness
        self.responsiveness_ts = responsiveness_ts
        self.send_hours = send_hours

    def apply_consent(self, update: ConsentUpdate) -> bool:
        """Apply a consent update unless an equally recent or newer one was applied; True when applied.

        Opting out also drops held pushes.
        """
        if self.consent_ts is not None and update.ts < self.consent_ts:
            return False
        self.opted_in = update.opted_in
        self.consent_ts = update.ts
        if not update.opted_in:
            self.held.clear()
        return True

    def observe_time_zone(self, time_zone: str | None) -> None:
        """Remember the user's IANA zone from an event's ``context.time_zone`` (None keeps the last one)."""
        if time_zone:
            self.time_zone = time_zone

    def to_record(self) -> PolicyRecord:
        """The stored form (``K3``, ``stream.record_rows``); shares the push records, so encode it before
        they change again."""
        return PolicyRecord(
            self.opted_in,
            self.consent_ts if self.opted_in is not None else None,
            self.time_zone,
            self.pushes,
            self._held_rows(),
            self.responsiveness,
            self.responsiveness_ts if self.responsiveness else None,
            self.send_hours or None,
        )

    @classmethod
    def from_record(cls, record: PolicyRecord) -> UserPolicyState:
        """Rebuild from :meth:`to_record` (a decoded record: its push records are taken over)."""
        return cls(
            record.opted_in,
            record.consent_ts,
            record.time_zone,
            record.pushes,
            _held(record.held),
            record.responsiveness,
            record.responsiveness_ts,
            record.send_hours,
        )

    def _held_rows(self) -> list[list[Any]]:
        return [
            [
                h.release_at,
                h.push.model_dump(mode="json", exclude_none=True),
                *([h.context] if h.context else []),
            ]
            for h in self.held
        ]

    def to_dict(self) -> dict[str, Any]:
        """The ``K1``/``K2`` record's form (read from stores written before ``K3``); keys: c/ct consent and
        its ts, tz, p pushes, h held, r/rt offset."""
        out: dict[str, Any] = {}
        if self.opted_in is not None:
            out["c"] = self.opted_in
            out["ct"] = self.consent_ts
        if self.time_zone is not None:
            out["tz"] = self.time_zone
        if self.pushes:
            out["p"] = [r.to_list() for r in self.pushes]
        if self.held:
            out["h"] = self._held_rows()
        if self.responsiveness:
            out["r"] = self.responsiveness
            out["rt"] = self.responsiveness_ts
        if self.send_hours:
            out["sh"] = self.send_hours
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserPolicyState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            opted_in=data.get("c"),
            consent_ts=data.get("ct"),
            time_zone=data.get("tz"),
            pushes=[PushRecord.from_list(row) for row in data.get("p", [])],
            held=_held(data.get("h", [])),
            responsiveness=float(data.get("r", 0.0)),
            responsiveness_ts=data.get("rt"),
            send_hours=data.get("sh"),
        )


def _held(rows: list[list[Any]]) -> list[HeldPush]:
    """Held pushes from their stored rows (release time, the push as JSON, the context if any)."""
    return [HeldPush(Push.model_validate(row[1], strict=False), float(row[0]), *row[2:3]) for row in rows]
