"""The worker's reading of an ``events`` message: :class:`ValidEvent`, a msgspec struct with the fields and
constraints of :class:`~stream.contract.Event` (``stream.event_decoder`` decodes into it).

Its own module because the native build (``stream.native``) cannot compile a msgspec Struct, while the
decoder's per-event checks are compiled.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from stream.contract import MAX_PRICE, MAX_QUANTITY, Event, EventType

# Event's constraints, for msgspec (the differential test holds the two definitions together). The
# ids' rule against control characters is checked once on the raw message instead (plain_event):
# a pattern per field cost more than the rest of the decode.
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Time = Annotated[float, msgspec.Meta(ge=946_684_800.0, lt=4_102_444_800.0)]


class ValidContext(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """:class:`~stream.contract.EventContext` as the worker reads it."""

    device: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    locale: Annotated[str, msgspec.Meta(max_length=35)] | None = None
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class ValidEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, gc=False):
    """An ``events`` message that meets the contract, as the worker reads it (fields of
    :class:`~stream.contract.Event`, in its order). Untracked by the garbage collector: it holds
    strings, numbers and a context, never a cycle."""

    v: Literal[1] = 1
    event_id: _Id
    user_id: _Id
    type: EventType
    item_id: _Id | None = None
    ts: _Time
    session_id: _Id | None = None
    price: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_PRICE)] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)] | None = None
    query: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    push_id: _Id | None = None
    context: ValidContext | None = None

    @classmethod
    def of(cls, event: Event) -> ValidEvent:
        """The worker's reading of an event the reference parser (or a producer) made."""
        fields = event.model_dump()
        if fields["context"] is not None:
            fields["context"] = ValidContext(**fields["context"])
        return cls(**fields)
