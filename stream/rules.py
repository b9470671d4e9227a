"""Every rule that can stop a push, in one table: :data:`RULES`.

Three paths go through it, each taking the rules marked for it, in table order:

* ``decide``: a candidate now (:func:`stream.policy.decide`);
* ``release``: a push held through quiet hours, at its release time
  (:func:`stream.push_records.release_held`); the threshold and "already held" do not apply again,
  the rest is re-checked;
* ``precheck``: before anything is scored, the user-level rules only (:func:`stream.policy.user_blocked`),
  so the worker skips scoring for a user nothing could be sent to. It changes no outcome: ``decide``
  applies the same rules.

Stages order the table: ``user`` rules (consent, holdout, the shopper on the site) stop everything of
the user; then ``item`` rules, per candidate; then ``cap`` rules (rolling and local-day caps, minimum
gap), after the item rules, so an item's own reason is the one reported. The first rule that blocks
gives the suppression reason (a bounded code, safe as a metric label).

One rule is about a moment, not a candidate: a reminder moment waits out the shopper's last push
(:func:`reminder_waits_until`); the decider re-arms the moment instead of deciding it.

Adding a rule: one entry in :data:`RULES`, its reason in ``stream.policy_types.SuppressReason``, its setting
in ``stream.policy_config`` and a test. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from stream.policy_config import PolicyConfig
from stream.policy_state import seen_at

if TYPE_CHECKING:
    from stream.policy_state import PushRecord

_DAY = 86400.0

Path = Literal["decide", "release", "precheck"]
Stage = Literal["user", "item", "cap"]


_LOCAL_DATES: dict[tuple[float, ZoneInfo], date] = {}
_LOCAL_DATES_MAX = 16384  # about 2.4 MB when full


def local_date(ts: float, zone: ZoneInfo) -> date:
    """The calendar date of ``ts`` in ``zone``.

    Remembered per (ts, zone): every decision summarises the user's past pushes by local day
    (:meth:`PushHistory.of`), asking again for the same push times; the conversion is the costly part.
    A pure function's cache, so it changes no result; emptied when full.
    """
    key = (ts, zone)
    day = _LOCAL_DATES.get(key)
    if day is None:
        if len(_LOCAL_DATES) >= _LOCAL_DATES_MAX:
            _LOCAL_DATES.clear()
        day = _LOCAL_DATES[key] = datetime.fromtimestamp(ts, zone).date()
    return day


@dataclass(init=False, slots=True)
class PushHistory:
    """What the rules need from a user's past pushes at ``now``, computed once (read only; not frozen,
    whose init costs about three times as much, on the path of every decision; the ``__init__`` is
    written: see ``stream.native``)."""

    in_24h: int
    in_7d: int
    today: int  # in the user's local calendar day
    last_at: float | None
    categories_today: dict[str, int]
    items_recent: frozenset[str]  # pushed within item_repeat_window_seconds

    def __init__(
        self,
        in_24h: int,
        in_7d: int,
        today: int,
        last_at: float | None,
        categories_today: dict[str, int],
        items_recent: frozenset[str],
    ) -> None:
        self.in_24h = in_24h
        self.in_7d = in_7d
        self.today = today
        self.last_at = last_at
        self.categories_today = categories_today
        self.items_recent = items_recent

    @classmethod
    def of(
        cls, records: Sequence[PushRecord], now: float, zone: ZoneInfo, config: PolicyConfig
    ) -> PushHistory:
        """Summarise ``records`` at ``now``; rolling windows are (now - W, now]. A recovered push not
        yet met again by its own decision is left out (``stream.policy_state.seen_at``)."""
        records = seen_at(records, now)
        today = local_date(now, zone)
        in_24h = in_7d = today_count = 0
        last_at: float | None = None
        categories: dict[str, int] = {}
        items: set[str] = set()
        for r in records:
            age = now - r.created_at
            if age < 7 * _DAY:
                in_7d += 1
            if age < _DAY:
                in_24h += 1
            if age < config.item_repeat_window_seconds:
                items.add(r.item_id)
            if age < 2 * _DAY and local_date(r.created_at, zone) == today:
                today_count += 1
                if r.category is not None:
                    categories[r.category] = categories.get(r.category, 0) + 1
            if last_at is None or r.created_at > last_at:
                last_at = r.created_at
        return cls(in_24h, in_7d, today_count, last_at, categories, frozenset(items))


class UserFacts:
    """The user-level facts a rule may read; the push history is summarised only when a rule asks."""

    def __init__(
        self,
        consent: bool,
        holdout: bool,
        now: float,
        config: PolicyConfig,
        records: Sequence[PushRecord],
        zone: ZoneInfo,
        active: bool = False,
    ) -> None:
        self.consent = consent
        self.holdout = holdout
        self.active = active
        self.now = now
        self.config = config
        self._records = records
        self._zone = zone

    @cached_property
    def history(self) -> PushHistory:
        """The push history at ``now`` (computed on first use: most calls stop at a user rule)."""
        return PushHistory.of(self._records, self.now, self._zone, self.config)


@dataclass(init=False, slots=True)
class ItemFacts:
    """The facts of one candidate (or held push) a rule may read (read only; built per candidate, so
    not frozen: a frozen init costs about three times as much)."""

    item_id: str
    category: str | None
    in_catalog: bool
    in_stock: bool
    promotion_valid: bool  # True when there is no promotion to honour
    expires_at: float  # when a push of it made now would expire
    interest: float = 1.0
    threshold: float = 0.0
    held: bool = False  # the same item already waits for the end of quiet hours
    bought: bool = False  # the shopper bought it (since the push was decided, for a held push)

    def __init__(
        self,
        item_id: str,
        category: str | None,
        in_catalog: bool,
        in_stock: bool,
        promotion_valid: bool,
        expires_at: float,
        interest: float = 1.0,
        threshold: float = 0.0,
        held: bool = False,
        bought: bool = False,
    ) -> None:
        self.item_id = item_id
        self.category = category
        self.in_catalog = in_catalog
        self.in_stock = in_stock
        self.promotion_valid = promotion_valid
        self.expires_at = expires_at
        self.interest = interest
        self.threshold = threshold
        self.held = held
        self.bought = bought


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: the reason it gives, its stage, the paths it applies to and its test."""

    reason: str
    stage: Stage
    paths: frozenset[str]
    blocks: Callable[[UserFacts, ItemFacts], bool]
    doc: str


_ALL = frozenset({"decide", "release", "precheck"})
_NOW = frozenset({"decide", "release"})
_DECIDE = frozenset({"decide"})


def _category_full(u: UserFacts, i: ItemFacts) -> bool:
    limit = u.config.max_per_category_per_local_day
    return bool(limit) and i.category is not None and u.history.categories_today.get(i.category, 0) >= limit


def _min_gap(u: UserFacts, i: ItemFacts) -> bool:
    last = u.history.last_at
    return last is not None and u.now - last < u.config.min_gap_seconds


RULES: tuple[Rule, ...] = (
    Rule(
        "no_consent", "user", _ALL, lambda u, i: not u.consent, "opted out (or unknown, consent_default off)"
    ),
    Rule("holdout", "user", _ALL, lambda u, i: u.holdout, "in the holdout group (holdout_share)"),
    Rule("user_active", "user", _ALL, lambda u, i: u.active, "on the site now (active_window_seconds)"),
    Rule("not_in_catalog", "item", _NOW, lambda u, i: not i.in_catalog, "no catalog entry"),
    Rule("out_of_stock", "item", _NOW, lambda u, i: not i.in_stock, "stock checked at decision and release"),
    Rule(
        "promotion_invalid",
        "item",
        _NOW,
        lambda u, i: not i.promotion_valid,
        "the promotion it mentions no longer runs",
    ),
    Rule(
        "expired",
        "item",
        _NOW,
        lambda u, i: i.expires_at <= u.now + u.config.min_push_lifetime_seconds,
        "would expire within min_push_lifetime_seconds",
    ),
    Rule(
        "bought",
        "item",
        _NOW,
        lambda u, i: i.bought,
        "the shopper bought it (a held push: since it was decided)",
    ),
    Rule(
        "below_threshold",
        "item",
        _DECIDE,
        lambda u, i: i.interest < i.threshold,
        "interest below the trigger's threshold plus the user's offset",
    ),
    Rule(
        "item_repeat",
        "item",
        _NOW,
        lambda u, i: i.item_id in u.history.items_recent,
        "same item pushed within item_repeat_window_seconds",
    ),
    Rule("already_held", "item", _DECIDE, lambda u, i: i.held, "the same item already waits for quiet hours"),
    Rule("category_today", "item", _NOW, _category_full, "max_per_category_per_local_day reached"),
    Rule(
        "cap_7d",
        "cap",
        _ALL,
        lambda u, i: u.history.in_7d >= u.config.max_pushes_per_7d,
        "max_pushes_per_7d reached (rolling)",
    ),
    Rule(
        "cap_24h",
        "cap",
        _ALL,
        lambda u, i: u.history.in_24h >= u.config.max_pushes_per_24h,
        "max_pushes_per_24h reached (rolling)",
    ),
    Rule(
        "cap_local_day",
        "cap",
        _ALL,
        lambda u, i: u.history.today >= u.config.max_pushes_per_local_day,
        "max_pushes_per_local_day reached (the user's calendar day)",
    ),
    Rule("min_gap", "cap", _ALL, _min_gap, "last push less than min_gap_seconds ago"),
)

# Each path's rules, all of them and by stage. The stages order the table (tested), so a decision may
# check the user stage once (gate), the item stage per candidate (item_block) and the cap stage, the
# same for every candidate of the user, once (cap_block): the same first blocking rule as first_block.
_BY_PATH: dict[str, tuple[Rule, ...]] = {p: tuple(r for r in RULES if p in r.paths) for p in _ALL}
_USER_LEVEL: dict[str, tuple[Rule, ...]] = {
    p: tuple(r for r in _BY_PATH[p] if r.stage != "item") for p in _ALL
}
_STAGES: dict[tuple[str, str], tuple[Rule, ...]] = {
    (p, stage): tuple(r for r in _BY_PATH[p] if r.stage == stage)
    for p in _ALL
    for stage in ("user", "item", "cap")
}
_NO_ITEM = ItemFacts("", None, True, True, True, float("inf"))


def _first_blocking(table: tuple[Rule, ...], user: UserFacts, item: ItemFacts) -> str | None:
    for rule in table:
        if rule.blocks(user, item):
            return rule.reason
    return None


def user_block(user: UserFacts, path: Path) -> str | None:
    """The first user-level rule (user or cap stage) of ``path`` that blocks, or None."""
    return _first_blocking(_USER_LEVEL[path], user, _NO_ITEM)


def first_block(user: UserFacts, item: ItemFacts, path: Path) -> str | None:
    """The first rule of ``path`` that blocks this item for this user, or None."""
    return _first_blocking(_BY_PATH[path], user, item)


def item_block(user: UserFacts, item: ItemFacts, path: Path) -> str | None:
    """The first item-stage rule of ``path`` that blocks this item, or None. After :func:`gate` let the
    user through, ``item_block`` and then :func:`cap_block` give what :func:`first_block` gives."""
    return _first_blocking(_STAGES[(path, "item")], user, item)


def cap_block(user: UserFacts, path: Path) -> str | None:
    """The first cap-stage rule of ``path`` that blocks (the same for every candidate), or None."""
    return _first_blocking(_STAGES[(path, "cap")], user, _NO_ITEM)


def gate(user: UserFacts, path: Path) -> str | None:
    """The first user-stage rule of ``path`` that blocks (it stops every candidate), or None."""
    return _first_blocking(_STAGES[(path, "user")], user, _NO_ITEM)


def reminder_waits_until(records: Sequence[PushRecord], now: float, config: PolicyConfig) -> float | None:
    """When a reminder moment due at ``now`` may be decided instead: ``reminder_push_gap_seconds`` after
    the shopper's last push when that is later than ``now``, else None (decide now).

    A push within a day of another is opened less and opted out of more, and a reminder is not
    urgent: the shopper has stayed away a day already. Holdout users' ghost pushes count, so the
    holdout's moments wait the same way. Rolling window (now - gap, now], like the caps.
    """
    gap = config.reminder_push_gap_seconds
    if gap <= 0:
        return None
    last = max((r.created_at for r in seen_at(records, now)), default=None)
    if last is None or now - last >= gap:
        return None
    return last + gap
