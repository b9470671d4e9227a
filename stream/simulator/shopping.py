"""The simulated shoppers' organic behaviour and the catalog's own processes: session arrivals, browsing,
carts, checkouts and purchases (stock-outs and restocks), promotions and price drops
(``docs/simulator.md``)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from stream.contract import Promotion
from stream.simulator.config import (
    BROWSE_SHARPNESS,
    CART_BIAS,
    CHECKOUT_BIAS,
    CHECKOUT_INTEREST,
    DAY,
    HOUR,
    Message,
)
from stream.simulator.parts import WorldParts
from stream.simulator.shared import (
    _CART,
    _CHECKOUT,
    _PRICE_DROP,
    _PRICE_RESTORE,
    _PROMO_ARRIVAL,
    _PROMO_END,
    _PUSH,
    _RESTOCK,
    _SESSION_START,
    _SESSION_STEP,
    _derived_rng,
    _PushChain,
    _Session,
    _sigmoid,
)


class ShoppingMixin(WorldParts):
    """World mixin: the event queue's organic processes (everything but a push's response)."""

    # ------------------------------------------------------------------------------ the processes
    def _handle(self, kind: int, data: Any, t: float, out: list[Message]) -> None:
        if kind == _SESSION_START:
            self._start_session(data, t, out)
        elif kind == _SESSION_STEP:
            self._session_step(data, t, out)
        elif kind == _CART:
            self._add_to_cart(data[0], data[1], data[2], t, out)
        elif kind == _CHECKOUT:
            self._checkout(data, t, out)
        elif kind == _PUSH:
            self._push_step(data[0], data[1], t, out)
        elif kind == _PROMO_ARRIVAL:
            self._start_promotion(t, out)
            self._schedule(t + self._exp(self._promo_rate_per_s()), _PROMO_ARRIVAL, None)
        elif kind == _PROMO_END:
            item, promo_id = data
            promo = self.promotions[item]
            if promo is not None and promo.promotion_id == promo_id:
                self.promotions[item] = None
                self.discount[item] = 0.0
                out.append(self.catalog_update(item, t))
        elif kind == _PRICE_DROP:
            self._price_drop(t, out)
            self._schedule(t + self._exp(self._drop_rate_per_s()), _PRICE_DROP, None)
        elif kind == _PRICE_RESTORE:
            self.price[data] = self.list_price[data]
            self._price_dropped[data] = False
            out.append(self.catalog_update(data, t))
        elif kind == _RESTOCK:
            item, quantity = data
            self.stock[item] = quantity
            self._sold_out_pending[item] = False
            self.counts["restocks"] = self.counts.get("restocks", 0) + 1
            out.append(self.catalog_update(item, t))

    def _choose_category(self, u: int, rng: random.Random) -> int:
        logits = 1.5 * self.category_affinity[u].copy()
        logits[self.need[u]] += 2.5
        return self._pick(logits, rng)

    def _start_session(self, u: int, t: float, out: list[Message]) -> None:
        self._schedule(self._next_session_time(u, t), _SESSION_START, u)
        self._arrivals[u] += 1
        arrival = self._arrivals[u]
        if t >= self._need_until[u]:
            need_rng = self._need_rng[u]
            self.need[u] = self._pick(1.5 * self.category_affinity[u], need_rng)
            self._need_until[u] = t + need_rng.expovariate(1 / (self.config.need_days * DAY))
        if u in self._sessions:  # still browsing: no overlapping sessions
            return
        # The n-th arrival of a user draws from its own stream, in every world.
        rng = _derived_rng(self.config.seed, "session", u, arrival)
        n_actions = 1 + int(rng.expovariate(1 / max(self.config.mean_session_actions - 1, 1e-6)))
        key = f"s{arrival}"
        session = _Session(
            f"{self._prefix}s{u:06d}-{arrival}", min(n_actions, 60), self._choose_category(u, rng), rng, key
        )
        self._sessions[u] = session
        if rng.random() < 0.25:
            words = self.titles[int(rng.choice(self.category_items[session.category]))].split()
            query = " ".join(words[1:]) if rng.random() < 0.5 else words[-1]
            out.append(
                self._event(
                    u, "search", t, None, session.next_event_key(), session_id=session.session_id, query=query
                )
            )
            t += self._gap(rng)
        self._schedule(t, _SESSION_STEP, u)

    @staticmethod
    def _gap(rng: random.Random) -> float:
        return min(rng.lognormvariate(math.log(40.0), 0.8), 1800.0)

    def _session_step(self, u: int, t: float, out: list[Message]) -> None:
        s = self._sessions[u]
        rng = s.rng
        cart = self._cart[u]
        recent = self._recent[u]
        next_t = t + self._gap(rng)
        roll = rng.random()
        if cart and roll < 0.03:
            item = cart.pop(rng.randrange(len(cart)))
            out.append(
                self._event(
                    u, "remove_from_cart", t, item, s.next_event_key(), session_id=s.session_id, quantity=1
                )
            )
        else:
            if recent and roll < 0.25:
                # Revisit: the jacket viewed three times (more likely the better it fits).
                cands = np.fromiter(recent, dtype=np.int64)
                item = int(cands[self._pick(self._utilities(u, cands), rng)])
            else:
                if rng.random() > 0.7:
                    s.category = self._choose_category(u, rng)
                items = self.category_items[s.category]
                item = int(items[self._pick(BROWSE_SHARPNESS * self._utilities(u, items), rng)])
            out.append(self._event(u, "view", t, item, s.next_event_key(), session_id=s.session_id))
            s.viewed.append(item)
            if item in recent:
                recent.remove(item)
            recent.append(item)
            util = float(self._utilities(u, np.array([item]))[0])
            if self.stock[item] > 0 and item not in cart and rng.random() < _sigmoid(CART_BIAS + util):
                t_cart = t + 0.5 * self._gap(rng)
                self._schedule(t_cart, _CART, (u, item, s.session_id))
                next_t = t_cart + self._gap(rng)
        s.steps_left -= 1
        self._schedule(next_t, _SESSION_STEP if s.steps_left > 0 else _CHECKOUT, u)

    def _add_to_cart(self, u: int, item: int, session_id: str, t: float, out: list[Message]) -> None:
        cart = self._cart[u]
        if self.stock[item] <= 0 or item in cart:
            return
        # The session is still open: its checkout is scheduled after its last cart event.
        key = self._sessions[u].next_event_key()
        out.append(self._event(u, "add_to_cart", t, item, key, session_id=session_id, quantity=1))
        cart.append(item)
        del cart[:-10]  # a bounded cart: the oldest items are forgotten

    def _checkout(self, u: int, t: float, out: list[Message]) -> None:
        # Each cart item is bought with a probability rising with its utility; the rest stays in the cart.
        s = self._sessions.pop(u)
        cart = self._cart[u]
        for item in list(cart):
            util = float(self._utilities(u, np.array([item]))[0])
            if self.stock[item] > 0 and s.rng.random() < _sigmoid(CHECKOUT_BIAS + CHECKOUT_INTEREST * util):
                self._purchase(u, item, t, s.session_id, None, out, s.rng, s.next_event_key())
                cart.remove(item)

    def _purchase(
        self,
        u: int,
        item: int,
        t: float,
        session_id: str | None,
        chain: _PushChain | None,
        out: list[Message],
        rng: random.Random,
        key: str,
    ) -> None:
        quantity = 2 if rng.random() < 0.08 else 1
        quantity = min(quantity, int(self.stock[item]))
        ev = self._event(u, "purchase", t, item, key, session_id=session_id, quantity=quantity)
        out.append(ev)
        revenue = (ev.price or 0.0) * quantity
        c = self.user_counters
        c["purchases"][u] += 1
        c["revenue"][u] += revenue
        if chain is not None:
            c["push_purchases"][u] += 1
            c["push_revenue"][u] += revenue
        self._owned[u].add(item)
        if self.item_category[item] == self.need[u] and rng.random() < 0.5:
            self._need_until[u] = t  # need satisfied; a new one is drawn at the next session
        self.stock[item] -= quantity
        if self.stock[item] <= 0 and not self._sold_out_pending[item]:
            self.stock[item] = 0
            self._sold_out_pending[item] = True
            self.counts["stockouts"] = self.counts.get("stockouts", 0) + 1
            out.append(self.catalog_update(item, t))
            # The n-th stock-out of an item draws its restock from its own stream.
            self._stockouts[item] += 1
            restock = _derived_rng(self.config.seed, "restock", item, self._stockouts[item])
            delay = restock.expovariate(1 / (self.config.restock_hours * HOUR))
            self._schedule(t + delay, _RESTOCK, (item, restock.randint(5, 40)))

    def _start_promotion(self, t: float, out: list[Message]) -> None:
        rng = self._rng
        item = rng.randrange(self.config.n_items)
        if self.promotions[item] is not None:
            return
        self._promo_seq += 1
        discount = rng.choice((0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5))
        duration = rng.choice((6.0, 12.0, 24.0, 48.0, 72.0)) * HOUR
        promo_id = f"{self._prefix}p{self._promo_seq:06d}"
        promo = Promotion(promotion_id=promo_id, discount=discount, starts_at=t, ends_at=t + duration)
        self.promotions[item] = promo
        self.discount[item] = discount
        self.counts["promotions"] = self.counts.get("promotions", 0) + 1
        out.append(self.catalog_update(item, t))
        self._schedule(promo.ends_at, _PROMO_END, (item, promo.promotion_id))

    def _price_drop(self, t: float, out: list[Message]) -> None:
        rng = self._rng
        item = rng.randrange(self.config.n_items)
        if self._price_dropped[item]:
            return
        self._price_dropped[item] = True
        self.price[item] = max(0.5, round(float(self.list_price[item]) * (1.0 - rng.uniform(0.05, 0.3)), 2))
        self.counts["price_drops"] = self.counts.get("price_drops", 0) + 1
        out.append(self.catalog_update(item, t))
        self._schedule(t + rng.expovariate(1 / (5 * DAY)), _PRICE_RESTORE, item)
