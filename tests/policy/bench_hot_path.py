"""Hot-path timings of the policy pieces, single thread: ``.venv/bin/python -m tests.policy.bench_hot_path``.

Not a test (pytest does not collect it): a quick figure for capacity planning. Synthetic, seeded data:
5,000 items in 20 categories, 2,000 users, 20,000 events (90 % views, 8 % carts, 2 % purchases).
"""

from __future__ import annotations

import random
import time

from stream.candidates import PromotionBoard, gather_candidates
from stream.contract import CatalogUpdate
from stream.covisitation import CoVisitationIndex
from stream.engagement import Engagement
from stream.interest_index import InterestIndex
from stream.policy import PushRecord, UserPolicyState, decide, make_candidate
from stream.policy_config import PolicyConfig
from stream.timers import TimerQueue, on_behaviour
from stream.trending import TrendingItems

T0 = 1_717_236_000.0


def main() -> None:
    """Print microseconds per call of each hot-path step."""
    cfg = PolicyConfig.model_validate({})
    rng = random.Random(1)
    n_events = 20_000
    items = [f"i{n}" for n in range(5000)]
    covis = CoVisitationIndex.from_config(cfg)
    trending = TrendingItems.from_config(cfg)
    board = PromotionBoard()
    index = InterestIndex.from_config(cfg)
    timers = TimerQueue.from_config(cfg)
    users = {f"u{n}": Engagement(cfg.engagement_max_items) for n in range(2000)}

    start = time.perf_counter()
    for n in range(n_events):
        user = f"u{rng.randrange(2000)}"
        engagement = users[user]
        item = rng.choice(items)
        ts = T0 + n * 0.05
        kind = rng.choices(["view", "add_to_cart", "purchase"], [90, 8, 2])[0]
        covis.observe(item, engagement.recent(cfg.covisit_window), ts)
        trending.observe(item, kind, ts)
        engagement.observe(kind, item, ts)
        on_behaviour(timers, user, kind, item, f"e{n}", ts, cfg)
    elapsed = time.perf_counter() - start
    print(
        f"observe (engagement + co-visitation + trending + timers): {elapsed / n_events * 1e6:.1f} us/event"
    )

    now = T0 + n_events * 0.05
    start = time.perf_counter()
    total = 0
    for _ in range(n_events):
        total += len(gather_candidates(users[f"u{rng.randrange(2000)}"], covis, board, trending, now, cfg))
    elapsed = time.perf_counter() - start
    print(f"gather_candidates: {elapsed / n_events * 1e6:.1f} us/call ({total / n_events:.1f} candidates)")

    catalog = {
        it: CatalogUpdate(
            item_id=it, title="t", category=f"c{rng.randrange(20)}", price=10.0, stock=3, updated_at=T0
        )
        for it in items
    }
    sample = rng.sample(items, 50)
    probs = [rng.random() * 0.8 for _ in sample]
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        cands = [
            make_candidate(
                it,
                "in_session",
                1.0,
                p,
                now,
                cfg,
                catalog=catalog[it],
                cause="e",
                event_ts=now,
                session_last_ts=now - 60,
            )
            for it, p in zip(sample, probs, strict=True)
        ]
    elapsed = time.perf_counter() - start
    print(f"make_candidate: {elapsed / (rounds * 50) * 1e6:.1f} us/candidate")

    history = [
        PushRecord(f"p{k}", f"x{k}", "c1", "in_session", now - 86400 * (k + 1), now) for k in range(10)
    ]
    emits = 0
    start = time.perf_counter()
    for n in range(rounds):
        state = UserPolicyState(time_zone="Europe/Berlin", pushes=history)
        out = decide(f"u{n}", cands, state, now, cfg)
        emits += sum(v.outcome != "suppress" for _, v in out)
    elapsed = time.perf_counter() - start
    print(
        f"decide (50 candidates, 10 past pushes): {elapsed / rounds * 1e6:.1f} us/call ({emits} emits/holds)"
    )

    start = time.perf_counter()
    for n in range(n_events):
        for it, p in zip(sample[:10], probs[:10], strict=True):
            index.update(it, f"u{n % 3000}", p, now + n)
    elapsed = time.perf_counter() - start
    print(f"InterestIndex.update: {elapsed / (n_events * 10) * 1e6:.2f} us/update ({len(index)} entries)")
    print(
        f"sizes: co-visitation {len(covis)} items / {covis.entries()} pairs, trending {len(trending)}, "
        f"timers {len(timers)}"
    )


if __name__ == "__main__":
    main()
