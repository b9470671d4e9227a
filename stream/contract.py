"""The wire contract: JSON messages on Kairos's topics, versioned and strictly validated.

Times are Unix epoch seconds (float, UTC). Ids are strings. Every message carries ``v`` (the
schema version, default 1 on input). ``docs/contract.md`` documents each field with examples;
``kairos schema`` prints the JSON Schemas generated from these classes.

Parsing never raises anything but :class:`ContractError`, whose ``reason`` is one of a small,
fixed set (safe as a metric label) and whose ``detail`` says what was wrong. The dead letter that
wraps refused input is :mod:`stream.dead_letters`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from stream.text import ID_FORBIDDEN_CHARACTER

SCHEMA_VERSION = 1

EventType = Literal[
    "view", "add_to_cart", "remove_from_cart", "purchase", "search", "push_open", "push_click", "push_dismiss"
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

Trigger = Literal[
    "in_session",
    "price_drop",
    "back_in_stock",
    "promotion_start",
    "cart_abandonment",
    "promotion_ending",
    "browse_abandonment",
    "new_arrival",
    "reminder",
    "discovery",
]
TRIGGERS: tuple[str, ...] = Trigger.__args__  # type: ignore[attr-defined]

# Reasons a message is refused; bounded, so they can label metrics.
DeadLetterReason = Literal[
    "oversized",
    "not_utf8",
    "bad_json",
    "not_an_object",
    "invalid_field",
    "unsupported_version",
    "key_mismatch",
    "no_key",  # a record of a keyed topic without a key
    "wrong_partition",  # not on its key's murmur2 partition (a producer with another partitioner)
    "future_timestamp",  # its time is further ahead of the wall clock than worker.max_future_skew_seconds
    "processing_error",  # valid input the worker failed on (a bug): kept for a replay
    "catalog_full",  # a new catalog item beyond worker.max_catalog_items
]
DEAD_LETTER_REASONS: tuple[str, ...] = DeadLetterReason.__args__  # type: ignore[attr-defined]

M = TypeVar("M", bound="_Strict")


# Control characters (C0, DEL, C1): never part of an id (stream.text.ID_FORBIDDEN says why these and
# not every character that text for people leaves out).
def _no_control_characters(value: str) -> str:
    if ID_FORBIDDEN_CHARACTER.search(value) is not None:
        raise ValueError("an id must not contain control characters")
    return value


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, strip_whitespace=False),
    AfterValidator(_no_control_characters),
]
# The widest image vector a catalog message may carry; the model's declared width is checked at admission.
MAX_IMAGE_WIDTH = 2048

# The largest price (events and catalog) and quantity (events) a message may carry.
MAX_PRICE = 1e9
MAX_QUANTITY = 10_000

# Event times must be plausible: after 2000-01-01 and before 2100-01-01.
EpochSeconds = Annotated[float, Field(ge=946_684_800.0, lt=4_102_444_800.0)]


class ContractError(ValueError):
    """A message that does not meet the contract. ``reason`` is a bounded code, ``detail`` is prose."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DeadLetterReason = reason
        self.detail = detail


class _Strict(BaseModel):
    # Strict types (no "12" for 12), unknown fields refused, finite numbers only.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class EventContext(_Strict):
    """Where the event happened; ``time_zone`` (IANA name) drives quiet hours and daily caps."""

    device: Annotated[str, StringConstraints(max_length=64)] | None = None
    locale: Annotated[str, StringConstraints(max_length=35)] | None = None
    time_zone: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe" is a folder
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Event(_Strict):
    """A shopper's behaviour event on the ``events`` topic (key: ``user_id``)."""

    v: Literal[1] = 1
    event_id: Id
    user_id: Id
    type: EventType
    item_id: Id | None = None
    ts: EpochSeconds
    session_id: Id | None = None
    price: Annotated[float, Field(ge=0.0, le=MAX_PRICE)] | None = None
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)] | None = None
    query: Annotated[str, StringConstraints(max_length=512)] | None = None
    push_id: Id | None = Field(
        None, description="On push_open / push_click / push_dismiss: the push it answers."
    )
    context: EventContext | None = None

    @model_validator(mode="after")
    def _item_rules(self) -> Event:
        if self.type == "search":
            if self.item_id is not None:
                raise ValueError("a search event carries no item_id")
        elif self.item_id is None:
            raise ValueError(f"a {self.type} event needs an item_id")
        return self


class Promotion(_Strict):
    """A time-boxed discount on an item; ``discount`` is a fraction (0.2 = 20 % off)."""

    promotion_id: Id
    discount: Annotated[float, Field(gt=0.0, lt=1.0)]
    starts_at: EpochSeconds
    ends_at: EpochSeconds

    @model_validator(mode="after")
    def _ordered(self) -> Promotion:
        if self.ends_at <= self.starts_at:
            raise ValueError("promotion ends_at must be after starts_at")
        return self

    def active_at(self, now: float) -> bool:
        """Whether the promotion runs at ``now``."""
        return self.starts_at <= now < self.ends_at


class CatalogUpdate(_Strict):
    """The current state of one item on the compacted ``catalog`` topic (key: ``item_id``)."""

    v: Literal[1] = 1
    item_id: Id
    title: Annotated[str, StringConstraints(max_length=512)]
    category: Annotated[str, StringConstraints(max_length=128)]
    price: Annotated[float, Field(ge=0.0, le=MAX_PRICE)]
    stock: Annotated[int, Field(ge=0)]
    promotion: Promotion | None = None
    updated_at: EpochSeconds
    # Optional precomputed image embedding (finite floats; the model's declared width, checked when the
    # model maps content): lets an item without history get a place in the model (model/content.py).
    image: Annotated[list[float], Field(min_length=1, max_length=MAX_IMAGE_WIDTH)] | None = None

    def effective_price(self, now: float) -> float:
        """Price after the promotion, when one is active at ``now``."""
        if self.promotion is not None and self.promotion.active_at(now):
            return self.price * (1.0 - self.promotion.discount)
        return self.price


class ConsentUpdate(_Strict):
    """Whether a user accepts pushes, on the compacted ``consent`` topic (key: ``user_id``)."""

    v: Literal[1] = 1
    user_id: Id
    opted_in: bool
    ts: EpochSeconds


class Push(_Strict):
    """A push for marketing to deliver, on the ``pushes`` topic (key: ``user_id``).

    ``push_id`` is deterministic (see :func:`push_id`), so a consumer can drop duplicates.
    """

    v: Literal[1] = 1
    push_id: Id
    user_id: Id
    item_id: Id
    trigger: Trigger
    reason: str
    features: dict[str, float] = Field(default_factory=dict)
    score: float
    threshold: float
    model_version: str
    event_ts: float = Field(description="Event time of what triggered the push.")
    created_at: float
    expires_at: float
    promotion_id: Id | None = None
    title: str | None = None
    category: str | None = None
    price: float | None = None
    collapse_key: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None,
        description="Pushes with the same key replace each other in the delivery system while undelivered "
        "(FCM collapse_key / APNs apns-collapse-id); set by policy.collapse_key_template.",
    )


class Decision(_Strict):
    """One push decision for the audit topic: emitted, held (quiet hours) or suppressed, and why."""

    v: Literal[1] = 1
    user_id: Id
    item_id: Id
    trigger: Trigger
    outcome: Literal["emitted", "held", "suppressed"]
    reason: str
    score: float
    threshold: float
    ts: float


def push_id(user_id: str, item_id: str, trigger: str, cause: str) -> str:
    """Deterministic idempotency key: the same decision, replayed, yields the same id.

    ``cause`` identifies what caused the decision (the triggering event id, the catalog update's
    version, the timer's due time), so a redelivered input maps onto the same push.
    """
    digest = hashlib.blake2b(f"{user_id}\x1f{item_id}\x1f{trigger}\x1f{cause}".encode(), digest_size=12)
    return digest.hexdigest()


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# A JSON escape of a UTF-16 surrogate (D800-DFFF). Paired ones decode to one character; a lone one
# decodes to a string that cannot be encoded as UTF-8, which would break keys, state and outputs later.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(data: Any) -> bool:
    """Whether decoded JSON ``data`` holds a lone UTF-16 surrogate (from ``"\\ud800"``): a string that
    cannot be encoded as UTF-8 again, so hashing it, keying by it or writing it out would raise."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _describe(value: Any) -> str:
    """A short, safe description of a JSON value for an error detail (never a deep repr)."""
    if isinstance(value, bool | int | float) or value is None:
        text = repr(value)
        return text if len(text) <= 32 else f"a {len(text)}-digit number"
    if isinstance(value, str):
        return repr(value[:32]) + ("..." if len(value) > 32 else "")
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def _parse(model: type[M], raw: bytes | None, max_bytes: int) -> M:
    if raw is None:
        raise ContractError("bad_json", "empty message (no value)")
    if len(raw) > max_bytes:
        raise ContractError("oversized", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("not_utf8", f"not UTF-8 at byte {exc.start}") from exc
    try:
        data: Any = json.loads(text)
        lone = _SURROGATE_ESCAPE.search(text) is not None and has_lone_surrogate(data)
    except json.JSONDecodeError as exc:
        raise ContractError("bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise ContractError("bad_json", "nested too deeply") from exc
    except ValueError as exc:
        # An integer past Python's digit limit (4,300 digits) is refused by the decoder itself.
        raise ContractError("bad_json", f"undecodable value: {str(exc)[:120]}") from exc
    if lone:
        raise ContractError("bad_json", "a \\u escape of a lone UTF-16 surrogate (not a character)")
    if not isinstance(data, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("v", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # true and 1.0 equal 1 in Python
        raise ContractError(
            "unsupported_version",
            f"schema version {_describe(version)}; this worker reads {SCHEMA_VERSION}",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError("invalid_field", _summarise(exc)) from exc
    except RecursionError as exc:  # a deep value in a field that recurses (pydantic has its own limit)
        raise ContractError("invalid_field", "a value nested too deeply") from exc


def parse_event(raw: bytes | None, max_bytes: int = 16_384) -> Event:
    """Validate one ``events`` message; raise :class:`ContractError` when it breaks the contract."""
    return _parse(Event, raw, max_bytes)


def parse_catalog(raw: bytes | None, max_bytes: int = 16_384) -> CatalogUpdate:
    """Validate one ``catalog`` message."""
    return _parse(CatalogUpdate, raw, max_bytes)


def parse_consent(raw: bytes | None, max_bytes: int = 16_384) -> ConsentUpdate:
    """Validate one ``consent`` message."""
    return _parse(ConsentUpdate, raw, max_bytes)


def to_json_bytes(message: BaseModel) -> bytes:
    """Serialise a contract message compactly (what goes on the wire)."""
    return message.model_dump_json(exclude_none=True).encode("utf-8")
