"""Pass 2 of a batch: the GRU steps in rounds, each followed by the decisions queued behind it.

Round ``r`` holds each user's ``r``-th step, batched across users, so each user still sees its events
in order and every decision depends only on the inputs before it, never on batch boundaries.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np

from stream.asks import Ask, BatchUser, Op
from stream.contract import EVENT_TYPES
from stream.decider import Decider
from stream.feedback import apply_feedback, settle_ignored
from stream.outcome import Outcome
from stream.policy_config import PolicyConfig
from stream.scoring import AskScorer


def resolve(
    users: dict[str, BatchUser],
    steps: dict[str, list[tuple[str, int]]],
    ops: dict[str, list[Op]],
    out: Outcome,
    scoring: AskScorer,
    decider: Decider,
    config: PolicyConfig,
    carry: bool = False,
) -> dict[str, list[tuple[str, int]]]:
    """Pass 2: GRU steps in rounds, then the batch's asks scored at once, then the decisions in order.

    With ``carry``, only the rounds that the queued decisions need are run (up to the furthest step a
    decision waits behind); every user's steps beyond them are returned, not run, to be run with
    the next piece of work (``Work.steps``). Only a decision reads a hidden state (feedback and
    releases do not), so a step may run at any time before the next decision of its user or the
    batch's end. In a replay, where the clock closes pass 2 every few events for a user a timer asks
    about (who seldom has steps queued), this turns thousands of steps of one or two rows into
    fewer, wider ones. Returns the steps carried (empty without ``carry``).
    """
    stage = out.stage_seconds
    carried: dict[str, list[tuple[str, int]]] = {}
    if carry:
        # The furthest step any decision waits behind (a user's steps after their last ask wait too).
        needed = max((op.step for queue in ops.values() for op in queue if op.ask is not None), default=0)
        if needed == 0:  # the common case: the decisions are for users with no steps queued
            carried, steps = steps, {}
        else:
            carried = {u: s[needed:] for u, s in steps.items() if len(s) > needed}
            steps = {u: s if len(s) <= needed else s[:needed] for u, s in steps.items() if s}
    depth = max((len(s) for s in steps.values()), default=0)
    # Each round's ops, in user order then the user's own order, gathered once: a scan of every op per
    # round made a batch with one very active user quadratic in its events. (A user whose steps are
    # carried has ops, never decisions, behind steps not run yet: rounds past ``depth``.)
    by_round: dict[int, list[tuple[BatchUser, Op]]] = {}
    for u, queue in ops.items():
        user = users[u]
        for op in queue:
            by_round.setdefault(op.step, []).append((user, op))
    # Every round's steps first, each ask taking the user's hidden state as its round left it, then
    # one scoring call for the whole batch (its rows in fixed chunks: a row's scores do not depend on
    # the rows beside it, stream.scoring), then the decisions round by round. Scoring is a pure
    # function of the captured state and candidates, and decisions change no step, so this is the
    # order of before, with a handful of padded chunks per batch instead of one or more per round.
    stepping = [(users[u], s) for u, s in steps.items()]
    asks: list[Ask] = []
    states: list[np.ndarray | None] = []
    for r in range(depth + 1):
        if r > 0:
            t = perf_counter()
            stepping = [(user, s) for user, s in stepping if len(s) >= r]
            step_round([(user, s[r - 1]) for user, s in stepping], out, scoring)
            stage["step"] += perf_counter() - t
        for _, op in by_round.get(r, ()):
            if op.ask is not None:
                asks.append(op.ask)
                states.append(op.ask.user.state.hidden)  # replaced, never changed, by later steps
    t = perf_counter()
    scored = dict(zip(map(id, asks), scoring.score(asks, states), strict=True))
    t1 = perf_counter()
    stage["score"] += t1 - t
    for r in sorted(by_round):
        for user, op in by_round[r]:
            if op.ask is not None:
                decider.decide(op.ask, scored[id(op.ask)], out)
                continue
            if op.event is None:  # a due release timer
                decider.release_held(user, op.now, out, op.seq, op.seen)
                continue
            # Feedback needs the pushes decided on this user's earlier events, hence pass 2.
            pstate = user.state.policy
            fb = apply_feedback(pstate, op.event, config)
            if fb is not None:
                decider.learn(user, fb, op.seq)
                if not fb.ghost:
                    out.feedback.append(fb)
            out.feedback += settle_ignored(pstate, op.event.ts, config)
            decider.release_held(user, op.event.ts, out, op.seq, op.seen)
    stage["decide"] += perf_counter() - t1
    return carried


def step_round(batch: list[tuple[BatchUser, tuple[str, int]]], out: Outcome, scoring: AskScorer) -> None:
    """One GRU step for each user of the round (a reset clears the state instead)."""
    scorer = scoring.scorer
    rows = [(user, item, kind) for user, (item, kind) in batch if kind >= 0]
    for user, (_, kind) in batch:
        if kind < 0:
            user.state.hidden = None
    if not rows:
        return
    indices = scorer.item_indices([item for _, item, _ in rows])
    for unknown in np.flatnonzero(indices < 0):
        name = EVENT_TYPES[rows[int(unknown)][2]]
        out.events[(name, "processed")] -= 1
        out.events[(name, "unknown_item")] += 1
    hidden = scorer.stack_states([u.state.hidden for u, _, _ in rows])
    new_hidden = scoring.step(hidden, indices, np.array([k for _, _, k in rows], dtype=np.int64))
    for i, (user, _, _) in enumerate(rows):
        user.state.hidden = new_hidden[i]
        user.state.model_version = scorer.version
