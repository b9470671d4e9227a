"""The session model: a GRU over item (+ event type) embeddings, scored against item embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import TrainConfig
from model.session_memory import MAX_WINDOW_ITEMS, SessionMemory, push_window
from model.session_votes import INDEX_BUFFERS, SessionIndex, SessionVotes


class SessionGRU(nn.Module):
    """One GRU cell stepped once per event; the output vector is dotted with item embeddings.

    The state of a session is ``[h | e_last | window]``: the GRU hidden vector; with ``last_item_skip``
    the embedding of the last known item (a skip connection into the output, which makes repeats and
    direct successors easy to score); with ``session_window`` W > 0 the W most recent item indices
    (see :mod:`model.session_memory`, whose repeat and neighbour terms :meth:`full_scores` adds). ``step``
    is the only recurrence, so online serving costs one constant-time step per event and
    ``state_width`` floats per user.
    """

    neighbour_idx: torch.Tensor
    neighbour_w: torch.Tensor
    votes_item_ptr: torch.Tensor
    votes_item_sessions: torch.Tensor
    votes_session_ptr: torch.Tensor
    votes_session_items: torch.Tensor

    def __init__(self, n_items: int, n_types: int, cfg: TrainConfig) -> None:
        super().__init__()
        d, h = cfg.embedding_size, cfg.hidden_size
        self.n_items = n_items
        self.item_emb = nn.Parameter(torch.empty(n_items, d))
        self.type_emb = nn.Parameter(torch.zeros(n_types, d))
        self.use_types = cfg.use_event_types
        self.cell = nn.GRUCell(d, h)
        self.tied = cfg.tied
        out_width = d if cfg.tied else h
        self.skip = nn.Linear(d, out_width, bias=False) if cfg.last_item_skip else None
        self.skip_width = d if cfg.last_item_skip else 0
        self.window = cfg.session_window
        if self.window and n_items > MAX_WINDOW_ITEMS:
            raise ValueError(f"session_window supports at most {MAX_WINDOW_ITEMS} items, not {n_items}")
        self.state_width = h + self.skip_width + self.window
        self.memory_cfg = cfg
        # The neighbour table is data, not a learned weight: buffers travel in the state_dict (and the
        # artifact's checksummed weights.pt) and are filled by set_neighbours() before training.
        k = cfg.neighbour_k if (self.window and cfg.neighbour_weight > 0) else 0
        self.register_buffer("neighbour_idx", torch.full((n_items, k), n_items, dtype=torch.int32))
        self.register_buffer("neighbour_w", torch.zeros((n_items, k), dtype=torch.float32))
        # The session-kNN index (model.session_votes), data too; its sizes depend on the training data,
        # so it starts empty and set_session_index() (or loading an artifact) installs it.
        self.uses_votes = bool(self.window and cfg.knn_weight > 0)
        index = SessionIndex.empty(n_items) if self.uses_votes else SessionIndex.absent()
        for name, tensor in index.tensors().items():
            self.register_buffer(name, tensor)
        self.proj = nn.Linear(h, d) if cfg.tied else nn.Identity()
        self.out_emb = None if cfg.tied else nn.Parameter(torch.empty(n_items, out_width))
        # (n_items, 1) so it can be looked up like an embedding (sparse gradients while training).
        self.bias = nn.Parameter(torch.zeros(n_items, 1), requires_grad=cfg.item_bias)
        self.sparse = False
        self.drop_in = nn.Dropout(cfg.dropout_embedding)
        self.drop_out = nn.Dropout(cfg.dropout_hidden)
        nn.init.normal_(self.item_emb, std=0.05)
        if self.out_emb is not None:
            nn.init.normal_(self.out_emb, std=0.05)

    def set_neighbours(self, idx: torch.Tensor, weight: torch.Tensor) -> None:
        """Install the item-to-item table built by :func:`model.session_memory.build_neighbours`."""
        if idx.shape != self.neighbour_idx.shape or weight.shape != self.neighbour_w.shape:
            want = tuple(self.neighbour_idx.shape)
            raise ValueError(f"neighbour table must be {want}, got {tuple(idx.shape)}")
        self.neighbour_idx.copy_(idx)
        self.neighbour_w.copy_(weight)

    def set_session_index(self, index: SessionIndex) -> None:
        """Install the session-kNN index built by :func:`model.session_votes.build_session_index`."""
        if index.n_items != self.n_items:
            raise ValueError(f"session index is for {index.n_items} items, the model has {self.n_items}")
        index.validate()
        for name, tensor in index.tensors().items():
            setattr(self, name, tensor)

    def session_index(self) -> SessionIndex:
        """The installed session-kNN index (empty unless ``knn_weight`` > 0)."""
        return SessionIndex(*(getattr(self, name) for name in INDEX_BUFFERS))

    def memory(self) -> SessionMemory | None:
        """The session-memory scorer (repeats, neighbours, session-kNN votes), or None without a window."""
        if not self.window:
            return None
        cfg = self.memory_cfg
        return SessionMemory(
            self.n_items,
            cfg.window_decay,
            cfg.repeat_bonus,
            cfg.repeat_mode,
            cfg.neighbour_weight,
            cfg.neighbour_floor,
            self.neighbour_idx,
            self.neighbour_w,
            votes=(
                SessionVotes(self.session_index(), cfg.knn_k, cfg.knn_sample, cfg.knn_weight, cfg.knn_floor)
                if self.uses_votes and cfg.knn_weight > 0
                else None
            ),
        )

    def output_embeddings(self) -> torch.Tensor:
        """The (n_items, D') matrix scores are dotted with."""
        return self.item_emb if self.out_emb is None else self.out_emb

    def step(self, state: torch.Tensor, items: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """One GRU step on states (B, state_width); rows whose item is -1 keep their state."""
        known = items >= 0
        safe = items.clamp(min=0)
        e = F.embedding(safe, self.item_emb, sparse=self.sparse)
        x = e + self.type_emb[types] if self.use_types else e
        hs = self.cell.hidden_size
        new = self.cell(self.drop_in(x), state[:, :hs])
        if self.skip is not None:
            new = torch.cat([new, e], dim=1)
        if self.window:
            new = torch.cat([new, push_window(self.window_of(state), safe)], dim=1)
        return torch.where(known[:, None], new, state)

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """The vector each state scores items with."""
        hs = self.cell.hidden_size
        out = self.proj(state[:, :hs])
        if self.skip is not None:
            out = out + self.skip(state[:, hs : hs + self.skip_width])
        return self.drop_out(out)

    def window_of(self, state: torch.Tensor) -> torch.Tensor:
        """The session-window slots of states (B, W); (B, 0) without session memory."""
        return state[:, self.state_width - self.window :]

    def full_scores(self, h: torch.Tensor, with_memory: bool = True) -> torch.Tensor:
        """Scores of every item for each state: (B, n_items); plus the session-memory terms if any."""
        scores = self.output(h) @ self.output_embeddings().T + self.bias[:, 0]
        memory = self.memory() if with_memory else None
        if memory is not None:
            scores = scores + memory.dense(self.window_of(h))
        return scores

    def candidate_rows(self, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output embeddings (M, D') and biases (M,) of candidate items (sparse grads when training)."""
        emb = F.embedding(cands, self.output_embeddings(), sparse=self.sparse)
        bias = F.embedding(cands, self.bias, sparse=self.sparse)[:, 0]
        return emb, bias

    def encode_prefixes(self, items: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Final states of right-aligned padded prefixes (B, T); padding is -1 and leaves the state alone."""
        h = torch.zeros((items.shape[0], self.state_width), dtype=torch.float32)
        for t in range(items.shape[1]):
            h = self.step(h, items[:, t], types[:, t])
        return h
