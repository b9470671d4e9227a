"""The session model: a GRU over item (+ event type) embeddings, scored against item embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import TrainConfig


class SessionGRU(nn.Module):
    """One GRU cell stepped once per event; the output vector is dotted with item embeddings.

    The state of a session is ``[h | e_last]``: the GRU hidden vector and, with ``last_item_skip``,
    the embedding of the last known item (a skip connection into the output, which makes repeats and
    direct successors easy to score). ``step`` is the only recurrence, so online serving costs one
    constant-time step per event and ``state_width`` floats per user.
    """

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
        self.state_width = h + (d if cfg.last_item_skip else 0)
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

    def output_embeddings(self) -> torch.Tensor:
        """The (n_items, D') matrix scores are dotted with."""
        return self.item_emb if self.out_emb is None else self.out_emb

    def step(self, state: torch.Tensor, items: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """One GRU step on states (B, state_width); rows whose item is -1 keep their state."""
        known = items >= 0
        safe = items.clamp(min=0)
        e = F.embedding(safe, self.item_emb, sparse=self.sparse)
        x = e + self.type_emb[types] if self.use_types else e
        new = self.cell(self.drop_in(x), state[:, : self.cell.hidden_size])
        if self.skip is not None:
            new = torch.cat([new, e], dim=1)
        return torch.where(known[:, None], new, state)

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """The vector each state scores items with."""
        out = self.proj(state[:, : self.cell.hidden_size])
        if self.skip is not None:
            out = out + self.skip(state[:, self.cell.hidden_size :])
        return self.drop_out(out)

    def full_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each state: (B, n_items)."""
        return self.output(h) @ self.output_embeddings().T + self.bias[:, 0]

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
