"""How a simulated shopper answers a push: the response model's probabilities (``docs/simulator.md``),
one draw per outcome, and the open, click, purchase, dismiss or opt-out played out over later
``advance`` calls."""

from __future__ import annotations

import hashlib

import numpy as np

from stream.contract import ConsentUpdate, Push
from stream.simulator.config import DAY, Message
from stream.simulator.parts import WorldParts
from stream.simulator.shared import (
    _PUSH,
    ResponseProbabilities,
    _derived_rng,
    _PushChain,
    _sigmoid,
    in_quiet_hours,
    local_hour,
    night_weight,
)


class PushResponseMixin(WorldParts):
    """World mixin: deliver a push and play out the shopper's response."""

    def deliver_push(self, push: Push, at: float) -> None:
        """Deliver a push at simulated time ``at``; the user's response comes out of later ``advance`` calls.

        Responses never happen before the world's clock, so events stay in time order.
        """
        u = self._user_index.get(push.user_id)
        i = self._item_index.get(push.item_id)
        if u is None or i is None:
            self.unknown_pushes += 1
            return
        if push.push_id in self._seen_pushes:
            self.duplicate_pushes += 1
            return
        self._seen_pushes.add(push.push_id)
        # The response draws are keyed by what the push is (this shopper, this item, the n-th push of
        # it to them), not by its id: two pushers that send the same shopper the same item draw the
        # same numbers, so their difference is what they did differently, not the luck of the draw.
        nth = self._pushes_of.get((u, i), 0) + 1
        self._pushes_of[(u, i)] = nth
        draw_key = f"{u}:{i}:{nth}"
        at = max(at, self.now)
        probs = self.response_probabilities(push, at)
        c = self.user_counters
        c["pushes"][u] += 1
        zone = self._zones[int(self.user_zone[u])]
        if in_quiet_hours(local_hour(at, zone)):
            c["quiet_pushes"][u] += 1
        if probs.expired:
            c["expired_pushes"][u] += 1
        if not self.opted_in[u]:
            c["pushes_after_opt_out"][u] += 1
        else:
            # The expected opt-outs: realised ones are a handful per world, too few to compare arms by.
            c["opt_out_risk"][u] += probs.opt_out
        self._push_times[u].append(at)
        # A private RNG per push: the response does not disturb the organic stream's random draws.
        rng = _derived_rng(self.config.seed, "push", draw_key)
        # Every outcome has its own draw, taken whether or not it is needed, so one outcome's draw
        # never depends on another's result.
        u_open, u_click, u_buy, u_dismiss, u_opt_out = (rng.random() for _ in range(5))
        opened = u_open < probs.open
        clicked = opened and u_click < probs.click
        buys = clicked and u_buy < probs.purchase
        dismissed = (not opened) and u_dismiss < probs.dismiss
        opts_out = self.opted_in[u] and u_opt_out < probs.opt_out
        key = "p" + hashlib.blake2b(push.push_id.encode(), digest_size=6).hexdigest()
        chain = _PushChain(push.push_id, u, i, at, opened, clicked, buys, dismissed, opts_out, key, draw_key)
        if opened:
            t_open = at + rng.expovariate(1 / (15 * 60.0))
            self._schedule(t_open, _PUSH, (chain, "open"))
            if clicked:
                t_click = t_open + rng.uniform(2.0, 30.0)
                self._schedule(t_click, _PUSH, (chain, "click"))
                if buys:
                    t_cart = t_click + rng.uniform(20.0, 300.0)
                    self._schedule(t_cart, _PUSH, (chain, "cart"))
                    self._schedule(t_cart + rng.uniform(30.0, 900.0), _PUSH, (chain, "purchase"))
        elif dismissed:
            self._schedule(at + rng.expovariate(1 / 600.0), _PUSH, (chain, "dismiss"))
        if opts_out:
            self._schedule(at + rng.uniform(30.0, 3600.0), _PUSH, (chain, "opt_out"))

    def response_probabilities(self, push: Push, at: float) -> ResponseProbabilities:
        """The response model's probabilities for ``push`` delivered at ``at`` (see docs/simulator.md)."""
        cfg = self.config
        u, i = self._user_index[push.user_id], self._item_index[push.item_id]
        util = float(self._utilities(u, np.array([i]))[0])
        times = self._push_times[u]
        n24 = sum(1 for t in times if at - DAY < t <= at)
        n7 = sum(1 for t in times if at - 7 * DAY < t <= at)
        night = night_weight(local_hour(at, self._zones[int(self.user_zone[u])]))
        in_stock = bool(self.stock[i] > 0)
        expired = push.expires_at < at
        if expired or not self.opted_in[u]:
            p_open = 0.0
        else:
            z = (
                cfg.open_bias
                + cfg.open_interest * util
                - cfg.open_out_of_stock * (not in_stock)
                - cfg.open_fatigue_24h * n24
                - cfg.open_fatigue_7d * n7
                - cfg.open_night * night
            )
            p_open = _sigmoid(z)
        p_click = _sigmoid(cfg.click_bias + cfg.click_interest * util)
        p_buy = _sigmoid(cfg.buy_bias + cfg.buy_interest * util) if in_stock else 0.0
        p_dismiss = _sigmoid(cfg.dismiss_bias + cfg.dismiss_night * night + cfg.dismiss_fatigue_24h * n24)
        p_opt_out = _sigmoid(
            cfg.opt_out_bias
            + cfg.opt_out_fatigue_24h * n24
            + cfg.opt_out_fatigue_7d * n7
            + cfg.opt_out_night * night
        )
        return ResponseProbabilities(
            open=p_open, click=p_click, purchase=p_buy, dismiss=p_dismiss, opt_out=p_opt_out, utility=util,
            pushes_24h=n24, pushes_7d=n7, night=night, expired=expired, in_stock=in_stock,
        )  # fmt: skip

    def _push_step(self, chain: _PushChain, step: str, t: float, out: list[Message]) -> None:
        u, i = chain.user, chain.item
        c = self.user_counters
        key = chain.key
        if step == "open":
            c["opens"][u] += 1
            out.append(self._event(u, "push_open", t, i, f"{key}-open", push_id=chain.push_id))
        elif step == "click":
            c["clicks"][u] += 1
            out.append(self._event(u, "push_click", t, i, f"{key}-click", push_id=chain.push_id))
            # The deep link lands on the product page, in a new session.
            session_id = f"{self._prefix}s{u:06d}-{key}"
            self._push_sessions[chain.push_id] = session_id
            out.append(self._event(u, "view", t, i, f"{key}-view", session_id=session_id))
        elif step == "cart":
            if self.stock[i] > 0 and i not in self._cart[u]:
                cart_session = self._push_sessions.get(chain.push_id)
                out.append(
                    self._event(u, "add_to_cart", t, i, f"{key}-cart", session_id=cart_session, quantity=1)
                )
                self._cart[u].append(i)
        elif step == "purchase":
            buy_session = self._push_sessions.pop(chain.push_id, None)
            if self.stock[i] <= 0:
                return  # sold out meanwhile: the shopper leaves empty-handed
            if i in self._cart[u]:
                self._cart[u].remove(i)
            rng = _derived_rng(self.config.seed, "push-purchase", chain.draw_key)
            self._purchase(u, i, t, buy_session, chain, out, rng, f"{key}-buy")
        elif step == "dismiss":
            c["dismisses"][u] += 1
            out.append(self._event(u, "push_dismiss", t, i, f"{key}-dismiss", push_id=chain.push_id))
        elif step == "opt_out" and self.opted_in[u]:
            self.opted_in[u] = False
            c["opt_outs"][u] += 1
            self.counts["opt_outs"] = self.counts.get("opt_outs", 0) + 1
            out.append(ConsentUpdate(user_id=self.user_ids[u], opted_in=False, ts=t))
