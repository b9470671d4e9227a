"""The incremental scorer the stream worker calls on its hot path: batched, numpy in and out.

A user's whole model state is one float32 vector of ``hidden_size`` floats (the GRU units, plus the
last item's embedding when the model has the last-item skip, plus the session window of recent item
indices when it has session memory, see ``model.session_memory``); each event costs one GRU step.
The input side of the GRU (item and event-type embeddings times the input weights) is precomputed
per item, so a step is one (B, H) x (H, 3H) product plus elementwise gates.

``interest`` reads only the candidates' rows plus, for the ``sampled_log_softmax`` calibration feature,
a fixed sample of at most ``n_head + n_tail`` items (see ``model.calibration``), so its cost does not grow
with the catalog. Artifacts calibrated on the full ``log_softmax`` still load and score as before.

Unknown items: :meth:`IncrementalScorer.item_indices` maps ids the model never saw to -1; a step with
-1 returns that row's state unchanged; as a candidate, -1 scores ``-inf`` (raw) and 0 (interest).

Items added from content (artifacts trained with ``--items``, see ``model.content``):
:meth:`IncrementalScorer.add_items` gives new items indices after the artifact's own
(``n_artifact_items`` and up), with an input embedding, output embedding and bias mapped from their
title, category and image; from then on they are stepped on and scored like any item. They never enter
the session-memory window kept in the user state: a step on an added item moves the GRU (and the
last-item skip) but leaves the window as it was, so the window holds only indices of the artifact's own
catalog and a stored state means the same whatever items a worker added, in whatever order. (The
consequence: no repeat bonus for re-visits of an added item; its memory terms are those of an item
without association.) Interest calibrated on the full ``log_softmax`` normalises over the artifact's items
only, so adding items changes no other item's interest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.added_items import (
    ContentMode,
    FreeRows,
    added_row_bounds,
    content_encoder,
    map_items,
    new_items,
)
from model.artifact import ArtifactError, load_artifact
from model.calibration import FEATURES
from model.content import ItemContent
from model.gru_kernel import step_numpy
from model.item_neighbours import ItemNeighboursMixin
from stream import native
from stream.contract import EVENT_TYPES


def _probability(x: np.ndarray) -> np.ndarray:
    # The logistic with full relative precision at small probabilities (the GRU step's tanh form,
    # model.gru_kernel, loses it: 0.5 + 0.5 * tanh(-4.6) cancels), and no overflow.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class IncrementalScorer(ItemNeighboursMixin):
    """Loaded model plus precomputed matrices; not thread-safe (the stream calls it from one thread)."""

    version: str
    hidden_size: int
    n_items: int  # rows: the artifact's items, then those added from content (some free: reuse_rows)
    n_artifact_items: int
    content_enabled: bool  # the artifact has a content mapping and its text encoder loaded
    image_width: int | None  # width of the image vectors the mapping takes (None: no image feature)
    warmup_gamma: float  # weight of a content-placed item's own recent events (model.warmup); 0: off
    warmup_offset: float  # lift of every content-placed item of the shopper's categories (model.warmup)

    def __init__(self, path: str | Path, threads: int = 1, content: ContentMode = "auto") -> None:
        """Load the artifact at ``path``; ``content``: "require", "auto" or "off" (see :meth:`load`)."""
        torch.set_num_threads(threads)
        art = load_artifact(path)
        model = art.model
        self.path = Path(path)
        self.version = art.version
        self.meta = art.meta
        self.metrics = art.metrics
        # Stream warm-up of content-placed items (model.warmup), chosen at training time; 0, 0: off.
        warmup = art.metrics.get("warmup")
        self.warmup_gamma = float(warmup.get("gamma", 0.0)) if isinstance(warmup, dict) else 0.0
        self.warmup_offset = float(warmup.get("offset", 0.0)) if isinstance(warmup, dict) else 0.0
        self.config = art.config
        self.hidden_size = model.state_width
        self._units = art.config.hidden_size
        self._skip_width = model.skip_width
        self._window = model.window
        self._memory = model.memory()
        self.n_items = self.n_artifact_items = len(art.item_ids)
        self._ids = list(art.item_ids)  # by row; "" for a free row (reuse_rows)
        self._lookup = {item: i for i, item in enumerate(art.item_ids)}
        self._free_rows = FreeRows()
        # The compiled step when the native build is loaded (model.gru_kernel), for the widths it takes.
        kernel = native.installed("model._gru_step")
        self._kernel = kernel if kernel is not None and self._units <= kernel.MAX_UNITS else None
        cal = art.meta.get("calibration", {})
        self.calibration_horizon = int(cal.get("horizon", art.config.calibration_horizon))
        self._cal_a = float(cal.get("a", 1.0))
        self._cal_b = float(cal.get("b", 0.0))
        # Artifacts from before the cheap features have no "feature" key: they used the full log-softmax.
        self.calibration_feature = str(cal.get("feature", "log_softmax"))
        if self.calibration_feature not in FEATURES:
            raise ArtifactError(f"{path}: unknown calibration feature {self.calibration_feature!r}")
        with torch.inference_mode():
            cell = model.cell
            w_ih, b_ih = cell.weight_ih.detach(), cell.bias_ih.detach()
            self._gi_item = (model.item_emb.detach() @ w_ih.T + b_ih).contiguous()  # (n_items, 3H)
            types = model.type_emb.detach() if model.use_types else torch.zeros_like(model.type_emb)
            self._gi_type = (types @ w_ih.T).contiguous()  # (n_types, 3H)
            self._w_hh_t = cell.weight_hh.detach().T.contiguous()  # (H, 3H)
            self._b_hh = cell.bias_hh.detach().clone()
            self._proj = model.proj
            self._skip = model.skip
            self._emb = model.item_emb.detach()
            # The step's weights as numpy arrays (see step).
            self._np_gi_item = self._gi_item.numpy()
            self._np_gi_type = self._gi_type.numpy()
            self._np_w_hh_t = self._w_hh_t.numpy()
            self._np_b_hh = self._b_hh.numpy()
            self._np_w_ih = w_ih.numpy()  # (3H, D): added items' input rows (add_items)
            self._np_b_ih = b_ih.numpy()
            self._np_emb = self._emb.numpy() if self._skip is not None else None
            self._out = model.output_embeddings().detach().contiguous()  # (n_items, D)
            self._bias = model.bias.detach()[:, 0].contiguous()
            self._unit_out: np.ndarray | None = None  # normalised known rows, built by similar_items
            # The learned items' extremes: an item added from content is held within them (add_items).
            self._added_bounds = added_row_bounds(self._emb.numpy(), self._out.numpy(), self._bias.numpy())
            self._id_array = np.array(self._ids)
            # The serving path's weights as numpy arrays (see score_and_interest).
            proj = model.proj
            self._np_proj_w: np.ndarray | None = None  # None: the identity (untied models)
            self._np_proj_b: np.ndarray | None = None
            if isinstance(proj, torch.nn.Linear):
                self._np_proj_w = proj.weight.detach().numpy()
                self._np_proj_b = None if proj.bias is None else proj.bias.detach().numpy()
            self._np_skip_w = None if self._skip is None else self._skip.weight.detach().numpy()
            self._norm_out: torch.Tensor | None = None
            self._norm_bias: torch.Tensor | None = None
            if self.calibration_feature == "sampled_log_softmax":
                try:
                    norm_items = torch.tensor(cal["norm_items"], dtype=torch.int64)
                    norm_logw = torch.tensor(cal["norm_logw"], dtype=torch.float32)
                    # Copies: the hot path then never indexes the catalog-wide matrix for the normaliser.
                    self._norm_out = self._out[norm_items].contiguous()
                    self._norm_bias = (self._bias[norm_items] + norm_logw).contiguous()
                except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
                    raise ArtifactError(f"{path}: bad normaliser sample in calibration ({exc})") from None
        self._content = art.content
        self._encoder = content_encoder(art.content, content, self.path)
        self.content_enabled = self._encoder is not None
        self.image_width = art.content.image_width if self.content_enabled and art.content else None

    @classmethod
    def load(cls, path: str | Path, threads: int = 1, content: ContentMode = "auto") -> IncrementalScorer:
        """Load and verify an artifact directory; raises :class:`ArtifactError` when it is unusable.

        ``content`` decides what happens to an artifact's content mapping: "require" raises
        :class:`ArtifactError` when its text encoder cannot load, "auto" (default) logs a warning and
        serves without it, "off" ignores it. Without a mapping, :attr:`content_enabled` is False.
        """
        scorer = cls(path, threads=threads, content=content)
        scorer.smoke_check()
        return scorer

    def add_items(self, item_ids: Sequence[str], contents: Sequence[ItemContent]) -> int:
        """Add items unknown to the model from their content; return how many were added.

        Ids already known (the artifact's or added before) are skipped, and so are repeats within the
        call (first one wins). Every content is validated before anything changes (ValueError: wrong
        image width, non-finite values, wrong types). Without :attr:`content_enabled` nothing is added
        and 0 is returned. Added items take the rows :meth:`reuse_rows` freed, lowest first, then new
        rows ``n_items, n_items + 1, ...``, in call order (an item's scores depend on its row's
        values, never on its index). An added item's embeddings and bias are held within the learned
        items' extremes (:class:`AddedRowBounds`): content far outside what the mapping was fitted on
        (a broken or hostile catalog producer's image vector) cannot make an item score above every
        learned one for every shopper.
        """
        if self._encoder is None or self._content is None:
            return 0
        ids, rows = new_items(item_ids, contents, self._lookup)
        if not ids:
            return 0
        in_emb, out_emb, bias = self._added_bounds.hold(*map_items(self._content, self._encoder, rows))
        # einsum works row by row: an added row does not depend on the rows added with it.
        gi = (np.einsum("nd,kd->nk", in_emb, self._np_w_ih) + self._np_b_ih).astype(np.float32)
        reused = self._free_rows.take(len(ids))
        k = len(reused)
        if k:  # into free rows, in place
            at = np.array(reused, dtype=np.int64)
            self._np_gi_item[at] = gi[:k]
            if self._np_emb is not None:
                self._np_emb[at] = in_emb[:k]
            with torch.inference_mode():
                self._out[torch.from_numpy(at)] = torch.from_numpy(out_emb[:k])
                self._bias[torch.from_numpy(at)] = torch.from_numpy(bias[:k])
        if k < len(ids):  # the rest appended (a copy of each table: only when it must grow)
            self._np_gi_item = np.concatenate([self._np_gi_item, gi[k:]])
            if self._np_emb is not None:
                self._np_emb = np.concatenate([self._np_emb, in_emb[k:]])
            with torch.inference_mode():
                self._out = torch.cat([self._out, torch.from_numpy(out_emb[k:])]).contiguous()
                self._bias = torch.cat([self._bias, torch.from_numpy(bias[k:])]).contiguous()
        for item, row in zip(ids[:k], reused, strict=True):
            self._lookup[item] = row
            self._ids[row] = item
        for item in ids[k:]:
            self._lookup[item] = len(self._ids)
            self._ids.append(item)
        self.n_items = len(self._ids)
        return len(ids)

    def remove_items(self, item_ids: Sequence[str]) -> list[tuple[str, int]]:
        """Forget items added from content (removed from the catalog): unknown from now on (index -1),
        until their content is added again. Returns each forgotten item with its row.

        The artifact's own items and unknown ids are skipped: a trained item is part of the model. The
        rows keep their values until :meth:`reuse_rows` hands them to later additions, so
        :meth:`restore_items` can undo this (a catalog slice the engine rolls back).
        """
        forgotten: list[tuple[str, int]] = []
        for item in item_ids:
            row = self._lookup.get(item)
            if row is not None and row >= self.n_artifact_items:
                del self._lookup[item]
                forgotten.append((item, row))
        return forgotten

    def restore_items(self, forgotten: Sequence[tuple[str, int]]) -> None:
        """Undo :meth:`remove_items` (before :meth:`reuse_rows` of those rows)."""
        for item, row in forgotten:
            self._lookup[item] = row

    def reuse_rows(self, rows: Sequence[int]) -> None:
        """Let later additions take these rows (of items :meth:`remove_items` forgot for good).

        A producer that creates and deletes items without end would otherwise grow the model by a row
        per item until the next model swap. A free row's bias is -inf, so the catalog-wide scores
        (:meth:`topk`, evaluation) never rank it.
        """
        with torch.inference_mode():
            for row in rows:
                self._ids[row] = ""
                self._bias[row] = -np.inf
        self._free_rows.release(rows)

    def prepare_items(self, contents: Sequence[ItemContent], limit: int) -> int:
        """Encode, ahead of :meth:`add_items`, the titles of up to ``limit`` of ``contents`` not encoded yet;
        return how many were encoded.

        Changes nothing :meth:`add_items` or scoring read but the text encoder's cache (a title's
        vector is its alone, :meth:`model.text_embedding.TextEncoder.encode_one`), so it may run in
        another thread while this scorer serves: the title encoding, nearly all of the cost of
        adding an item, then happens off the caller's thread.
        """
        encoder = self._encoder
        if encoder is None or self._content is None:
            return 0
        encoded = 0
        for content in contents:
            if encoded >= limit:
                break
            if not encoder.cached(content.title):
                encoder.encode_one(content.title)
                encoded += 1
        return encoded

    def initial_state(self, n: int) -> np.ndarray:
        """The state of users with no events yet: (n, H) zeros."""
        return np.zeros((n, self.hidden_size), dtype=np.float32)

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 indices of ``item_ids``, -1 for items the model does not know."""
        get = self._lookup.get
        return np.array([get(i, -1) for i in item_ids], dtype=np.int64)

    def item_id(self, index: int) -> str:
        """The item id at ``index`` (IndexError outside the catalog)."""
        if not 0 <= index < self.n_items:
            raise IndexError(f"item index {index} outside 0..{self.n_items - 1}")
        item = self._ids[index]
        if self._lookup.get(item) != index:
            raise IndexError(f"item index {index} is a free row")
        return item

    def stack_states(self, states: list[np.ndarray | None]) -> np.ndarray:
        """Users' states as the rows of one (B, H) float32 array, :meth:`initial_state` for None."""
        if self._kernel is not None:
            out = np.empty((len(states), self.hidden_size), dtype=np.float32)
            self._kernel.gather(out, states)  # copies each state's bytes: the same array as below
            return out
        init = self.initial_state(1)[0]
        rows = [init if s is None else np.asarray(s, dtype=np.float32) for s in states]
        return np.stack(rows) if rows else self.initial_state(0)

    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray:
        """One GRU step per row: new states (B, H) float32; rows with item -1 are returned unchanged.

        From the weights torch trained, in one C call when the native build is loaded, else in numpy,
        with the same bits either way (:mod:`model.gru_kernel`): a step is a few small products, where
        torch's per-operation dispatch, and numpy's, cost more than the arithmetic. Every operation
        works row by row, so a row's result does not depend on the other rows or on its position
        among them.
        """
        h = np.ascontiguousarray(states, dtype=np.float32)
        it = np.ascontiguousarray(items, dtype=np.int64)
        ty = np.ascontiguousarray(event_types, dtype=np.int64)
        if h.ndim != 2 or h.shape[1] != self.hidden_size or len(it) != len(h) or len(ty) != len(h):
            raise ValueError("step needs states (B, H), items (B,) and event_types (B,)")
        args = (self._np_gi_item, self._np_gi_type, self._np_w_hh_t, self._np_b_hh, self._np_emb)
        if self._kernel is not None:  # it checks the event types as below
            out = np.empty_like(h)
            self._kernel.step(
                out, h, it, ty, *args, self._units, self._window, self.n_artifact_items, len(EVENT_TYPES)
            )
            return out
        if len(ty) and (int(ty.min()) < 0 or int(ty.max()) >= len(EVENT_TYPES)):
            raise ValueError("event_types must index stream.contract.EVENT_TYPES")
        return step_numpy(h, it, ty, *args, self._window, self.n_artifact_items)

    def _outputs(self, h: torch.Tensor) -> torch.Tensor:
        out = self._proj(h[:, : self._units])
        if self._skip is not None:
            out = out + self._skip(h[:, self._units : self._units + self._skip_width])
        return out

    def _window_of(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, self.hidden_size - self._window :]

    def _np_outputs(self, h: np.ndarray) -> np.ndarray:
        """:meth:`_outputs` in numpy, row by row (einsum works row by row, as :meth:`step` must)."""
        g = h[:, : self._units]
        out = g if self._np_proj_w is None else np.einsum("bh,dh->bd", g, self._np_proj_w)
        if self._np_proj_b is not None:
            out = out + self._np_proj_b
        if self._np_skip_w is not None:
            skip = h[:, self._units : self._units + self._skip_width]
            out = out + np.einsum("bs,ds->bd", skip, self._np_skip_w)
        return out

    def _np_feature(self, h: np.ndarray, out: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The calibration feature of raw scores (B, C): see :meth:`interest`."""
        if self._norm_out is not None and self._norm_bias is not None:
            z = np.einsum("bd,nd->bn", out, self._norm_out.numpy()) + self._norm_bias.numpy()
            top = z.max(axis=1, keepdims=True)
            return scores - (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))
        if self.calibration_feature == "log_softmax":
            # Artifacts from before the cheap features: the whole catalog, one row per call (a call's
            # shape then never changes, so neither does a row's rounding).
            with torch.inference_mode():
                rows = []
                for i in range(len(h)):
                    one = torch.from_numpy(h[i : i + 1])
                    known = self._full(one, self._outputs(one))[:, : self.n_artifact_items]
                    rows.append(torch.logsumexp(known, dim=1, keepdim=True).numpy())
            return scores - (np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32))
        return scores

    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Raw scores (B, C) float32 of candidate indices; -1 candidates score -inf."""
        return self.score_and_interest(states, candidates)[0]

    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Calibrated P(candidate occurs within the next ``calibration_horizon`` events), (B, C) float32.

        ``sigmoid(a * x + b)`` of the artifact's calibration feature ``x`` (see ``model.calibration``):
        the raw score, the raw score minus the logsumexp over a fixed item sample (cost independent of
        the catalog size), or, for older artifacts, the full-catalog log-softmax. -1 candidates get 0.
        """
        return self.score_and_interest(states, candidates)[1]

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` and :meth:`interest` together, computing the candidate scores once (hot path).

        In numpy and row by row, like :meth:`step`: a row's results do not depend on the other rows of
        the call, so the engine scores a round's asks in one call of any size (until 2026-12-05 it
        padded them to fixed-size chunks for torch, whose products round a row by the block it is in),
        and the fixed cost per call is about a third of torch's dispatch. The catalog-wide paths
        (:meth:`catalog_scores`, :meth:`topk`) stay in torch: they are for evaluation.

        ``lift`` (B, C), optional: added to the raw scores before calibration (the stream warm-up of
        content-placed items, ``model.warmup``).
        """
        h = np.ascontiguousarray(states, dtype=np.float32)
        cand = np.asarray(candidates, dtype=np.int64)
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        out = self._np_outputs(h)
        scores = np.einsum("bcd,bd->bc", self._out.numpy()[safe], out) + self._bias.numpy()[safe]
        if self._memory is not None:
            scores = scores + self._memory.candidates(h[:, self.hidden_size - self._window :], safe)
        if lift is not None:
            scores = scores + np.asarray(lift, dtype=np.float32)
        prob = _probability(self._cal_a * self._np_feature(h, out, scores) + self._cal_b)
        raw = np.where(valid, scores, -np.inf).astype(np.float32, copy=False)
        return raw, np.where(valid, prob, 0.0).astype(np.float32, copy=False)

    def _full(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of the whole catalog (topk, and artifacts calibrated on ``log_softmax``)."""
        full = torch.addmm(self._bias, out, self._out.T)
        if self._memory is not None:
            window = self._window_of(h)
            memory = self._memory.dense(window)
            if self.n_items > self.n_artifact_items:  # added items: never in the window, no neighbours
                added = np.tile(np.arange(self.n_artifact_items, self.n_items), (len(h), 1))
                terms = self._memory.candidates(window.numpy(), added)
                memory = torch.cat([memory, torch.from_numpy(terms)], dim=1)
            full = full + memory
        return full

    def catalog_scores(self, states: np.ndarray) -> np.ndarray:
        """Raw scores (B, n_items) float32 of the whole catalog, artifact and added items (evaluation)."""
        with torch.inference_mode():
            h = torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32))
            return self._full(h, self._outputs(h)).numpy()

    def topk(self, states: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best items of the catalog per state: indices (B, k) int64 and raw scores (B, k) float32."""
        with torch.inference_mode():
            h = torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32))
            full = self._full(h, self._outputs(h))
            scores, idx = torch.topk(full, min(k, self.n_items), dim=1)
            return idx.numpy(), scores.numpy()

    def smoke_check(self) -> None:
        """Step and score a tiny batch; raise :class:`ArtifactError` unless everything is finite."""
        try:
            states = self.initial_state(2)
            items = np.array([0, -1], dtype=np.int64)
            states = self.step(states, items, np.zeros(2, dtype=np.int64))
            cands = np.array([[0, min(1, self.n_items - 1)], [0, -1]], dtype=np.int64)
            raw = self.score(states, cands)
            prob = self.interest(states, cands)
            _, top = self.topk(states, 1)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"{self.path}: smoke check failed ({type(exc).__name__}: {exc})") from None
        if not (
            np.isfinite(states).all()
            and np.isfinite(raw[0]).all()
            and np.isfinite(prob).all()
            and np.isfinite(top).all()
            and raw[1, 1] == -np.inf
        ):
            raise ArtifactError(f"{self.path}: smoke check produced non-finite outputs")
