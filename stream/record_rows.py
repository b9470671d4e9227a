"""The user record's rows and sections as msgspec Structs, so a stored record (``K3``,
``stream/state.py``) decodes straight into the objects the engine works with and encodes from them,
in C, with no Python loop building or flattening rows.

Decoding a ``K2`` header into dicts and lists and then into these objects cost about three quarters of
a record's load (``benchmarks/README.md``, "The user record in one decode"): the objects, not the
bytes, were the cost.

This module stays out of the native build (``stream.native.MODULES``) on purpose: mypyc compiles a
Struct subclass as its own class and drops the Struct's options (an ``array_like`` row then encodes
as a map). Compiled code reads and writes these objects' fields as ordinary attributes.

Treat the field order of an ``array_like`` Struct as part of the stored format: a field is added only
at the end, with a default, and the version tag changes for anything else.
"""

from __future__ import annotations

from typing import Any

import msgspec


class RecentItem(msgspec.Struct, array_like=True):
    """An item the user touched: its id, the event type, when, in which session (the model's input
    history, replayed after a model swap)."""

    item_id: str
    type: str
    ts: float
    session_id: str | None


class EngagedItem(msgspec.Struct, array_like=True):
    """One item the user engaged with (``stream.engagement.Engagement``)."""

    views: int = 0
    carts: int = 0
    in_cart: bool = False
    bought: bool = False
    last_ts: float = 0.0


class PushRecord(msgspec.Struct, array_like=True):
    """A push sent to the user, with what happened to it (feedback fills the ``*_at`` fields)."""

    push_id: str
    item_id: str
    category: str | None
    trigger: str
    created_at: float  # when it was emitted (for a held push: when it was released)
    expires_at: float
    opened_at: float | None = None
    clicked_at: float | None = None
    purchased_at: float | None = None
    revenue: float = 0.0
    dismissed_at: float | None = None
    ignored_at: float | None = None
    # The decision context (stream.response_estimates.context_key) its outcome teaches, if any.
    context: str = ""
    # A holdout user's "ghost": what would have been pushed, never sent. It counts for the caps (so
    # holdout decisions mirror treatment ones) and its item's purchase is the no-push baseline.
    ghost: bool = False
    # Read back from the pushes topic at recovery (emitted just before a crash, after the state's last
    # changelog write) and not yet met again by the decision that emitted it, which completes it.
    recovered: bool = False

    def to_list(self) -> list[Any]:
        """The ``K1``/``K2`` record's row (field order as declared; the optional tail only when set)."""
        row = [
            self.push_id,
            self.item_id,
            self.category,
            self.trigger,
            self.created_at,
            self.expires_at,
            self.opened_at,
            self.clicked_at,
            self.purchased_at,
            self.revenue,
            self.dismissed_at,
            self.ignored_at,
        ]
        if self.context or self.ghost or self.recovered:
            row += [self.context, self.ghost]
        if self.recovered:
            row.append(True)
        return row

    @classmethod
    def from_list(cls, row: list[Any]) -> PushRecord:
        """Inverse of :meth:`to_list`."""
        return cls(*row)


class EngagementRecord(msgspec.Struct, omit_defaults=True):
    """``Engagement`` as stored: the items (most recent last), the session's last event time, the visit
    starts and last activity, and the bought items forgotten among the recent ones."""

    last_ts: float | None = msgspec.field(default=None, name="t")
    items: dict[str, EngagedItem] = msgspec.field(default_factory=dict, name="i")
    visits: list[float] | None = msgspec.field(default=None, name="v")  # visit starts..., last activity
    earlier_purchases: list[str] | None = msgspec.field(default=None, name="p")


class PolicyRecord(msgspec.Struct, omit_defaults=True):
    """``UserPolicyState`` as stored (``stream.policy_state``); held pushes stay in their ``K2`` rows
    (release time, the push as JSON, context), read rarely enough that their decode does not matter."""

    opted_in: bool | None = msgspec.field(default=None, name="c")
    consent_ts: float | None = msgspec.field(default=None, name="ct")
    time_zone: str | None = msgspec.field(default=None, name="tz")
    pushes: list[PushRecord] = msgspec.field(default_factory=list, name="p")
    held: list[list[Any]] = msgspec.field(default_factory=list, name="h")
    responsiveness: float = msgspec.field(default=0.0, name="r")
    responsiveness_ts: float | None = msgspec.field(default=None, name="rt")
    send_hours: list[float | int] | None = msgspec.field(default=None, name="sh")


class UserRecordHeader(msgspec.Struct, array_like=True):
    """The ``K3`` header: everything in a user's record but the hidden state (``stream.state``)."""

    model_version: str
    last_event_ts: float
    last_decision_ts: float
    session_id: str | None
    n_events: int
    recent: list[RecentItem]
    event_ids: list[str]
    engagement: EngagementRecord
    timers: list[list[Any]]
    policy: PolicyRecord
