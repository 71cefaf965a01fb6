"""Torch encoder modules: every kind maps a user's features to an embedding.

All kinds share one call signature, ``module(dense, item_tokens, item_weights)``,
so serving and training never special-case a kind. Register new kinds in
:data:`ENCODER_KINDS`.

    >>> import torch
    >>> from state.features import FeatureSpec
    >>> spec = FeatureSpec()
    >>> m = build_model("state-ae", spec, {"dim": 8, "hidden": 32})
    >>> dense = torch.rand(3, spec.feature_width)
    >>> items = torch.full((3, spec.item_history), -1, dtype=torch.int32)
    >>> m(dense, items, torch.zeros(3, spec.item_history)).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from state.features import FeatureSpec

__all__ = ["StateAutoencoder", "ItemPoolEncoder", "SequenceEncoder", "RecurrentEncoder", "ENCODER_KINDS", "build_model"]


class StateAutoencoder(nn.Module):
    """MLP autoencoder over the normalised state vector (action mix, categories, recency/frequency/value).

    The embedding is the bottleneck; the decoder exists only for training.
    Inputs are standardised with the training set's mean and spread, stored
    as buffers so the artifact carries them.
    """

    kind = "state-ae"
    uses_items = False  # reads the dense features only (the serving side skips gathering recent items)

    def __init__(self, spec: FeatureSpec, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        width = spec.feature_width
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.encoder = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def standardise(self, dense: torch.Tensor) -> torch.Tensor:
        return (dense - self.mean) / self.scale

    def forward(self, dense: torch.Tensor, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.standardise(dense))

    def reconstruction_loss(self, dense: torch.Tensor) -> torch.Tensor:
        x = self.standardise(dense)
        return nn.functional.mse_loss(self.decoder(self.encoder(x)), x)


class ItemPoolEncoder(nn.Module):
    """Item-aware encoder: a learned item-embedding table, pooled over a user's recent items with time decay.

    ``tokens`` (a sorted buffer) is the item vocabulary: the item tokens of the
    training log seen at least ``min_count`` times; row ``i`` of ``embedding``
    belongs to ``tokens[i]``. A user's embedding is the L2-normalised mean of
    their recent items' embeddings weighted by each item's decayed weight
    (items outside the vocabulary are skipped; a user with none embeds as 0).
    Every row is computed on its own (gather + per-row sum), so a user's
    embedding never depends on who else is in the batch.

    The table is trained self-supervised (see :mod:`encoders.train_items`):
    the pooled embedding of a user's recent items must predict the next items
    they touch, so items that co-occur in users' sequences end up close.
    """

    kind = "item-pool"
    uses_items = True  # pools the recent-item columns of Features

    def __init__(self, spec: FeatureSpec, dim: int = 32, vocab_size: int = 1) -> None:
        super().__init__()
        self.register_buffer("tokens", torch.zeros(vocab_size, dtype=torch.int32))  # item tokens are < 2**31
        self.embedding = nn.Embedding(vocab_size, dim)
        # next-item head: used in training only (logits = pooled @ output.T + bias)
        self.output = nn.Embedding(vocab_size, dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def lookup(self, item_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocabulary index of each token (clamped) and whether the token is in the vocabulary."""
        t = item_tokens.to(torch.int32)
        idx = torch.searchsorted(self.tokens, t).clamp_max_(len(self.tokens) - 1)
        return idx, self.tokens[idx] == t  # empty slots (-1) never match: tokens are >= 0

    def pool(self, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        idx, known = self.lookup(item_tokens)
        w = torch.where(known, item_weights, torch.zeros_like(item_weights))
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        return (self.embedding(idx) * w.unsqueeze(-1)).sum(1)

    def forward(self, dense: torch.Tensor, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        # normalise(weighted sum) == normalise(weighted mean): one fused embedding_bag, no [batch, items, dim] tensor
        idx, known = self.lookup(item_tokens)
        w = torch.where(known, item_weights, torch.zeros_like(item_weights))
        pooled = nn.functional.embedding_bag(idx, self.embedding.weight, per_sample_weights=w, mode="sum")
        return nn.functional.normalize(pooled, dim=1, eps=1e-12)


class SequenceEncoder(ItemPoolEncoder):
    """Sequence encoder: the user's recent items pooled with attention over their time gaps.

    The state keeps, per user, the last ``item_history`` items with their
    event-time-decayed weights; a weight ``w`` is ``2 ** (-gap / half_life)``,
    ``gap`` being the item's time to the user's newest event, so the gap is
    read back from it (``ln w``). ``attention`` says how the recent items
    are weighted:

    - ``"uniform"``: every recent item in the vocabulary counts the same;
    - ``"salience"``: item ``i`` weighs ``exp(salience[i])`` (a learned per-item scalar);
    - ``"salience+recency"``: ``exp(salience[i]) * w ** recency``, ``recency`` learned
      (0: the gap does not matter; 1: the state's own decay, as ``item-pool``).

    The embedding is the L2-normalised weighted mean of the items' embeddings
    (items outside the vocabulary are skipped; a user with none embeds as 0).
    The per-item action is not kept by the state (only the user's action mix
    is), so it does not enter. Every variant costs one lookup and one
    ``embedding_bag`` per batch, plus a gather and a few element-wise ops per
    recent item for the attention (no [batch, items, items] matrix: the query
    is learned, not computed per user).

    Trained self-supervised (:mod:`encoders.train_items`): the pooled context
    must predict the items of the user's next ``window`` events.

    ``split > 0``: the table holds two item vectors side by side (columns
    ``[:split]`` and ``[split:]``, e.g. the next-window ones and the log's
    co-occurrence ones, :mod:`encoders.cooccurrence`); each half of the pooled
    vector is L2-normalised on its own, so that each counts the same in a
    distance, and the two are concatenated (divided by sqrt 2: unit length).
    """

    kind = "item-seq"
    uses_items = True
    ATTENTION = ("uniform", "salience", "salience+recency")

    def __init__(self, spec: FeatureSpec, dim: int = 32, vocab_size: int = 1, attention: str = "uniform",
                 split: int = 0) -> None:
        super().__init__(spec, dim=dim, vocab_size=vocab_size)
        if attention not in self.ATTENTION:
            raise ValueError(f"attention must be one of {self.ATTENTION}, not {attention!r}")
        if not 0 <= split < dim:
            raise ValueError(f"split must be in [0, dim={dim}), not {split}")
        self.attention_kind = attention
        self.split = split
        self.salience = nn.Parameter(torch.zeros(vocab_size))
        self.recency = nn.Parameter(torch.zeros(1))

    def attention(self, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocabulary index of each recent item and its unnormalised attention weight (0 if unknown)."""
        idx, known = self.lookup(item_tokens)
        if self.attention_kind == "uniform":
            return idx, known.to(self.embedding.weight.dtype)
        score = self.salience[idx]
        if self.attention_kind == "salience+recency":
            # ln(w) = -ln(2) * gap / half_life, so the weight is w ** recency; weights that underflowed
            # (float32: ~126 half-lives) count as that old
            score = score + self.recency * torch.log(item_weights.clamp_min(1e-38))
        return idx, torch.where(known, torch.exp(score.clamp(-60.0, 60.0)), torch.zeros_like(score))

    def pool(self, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        idx, w = self.attention(item_tokens, item_weights)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
        return nn.functional.embedding_bag(idx, self.embedding.weight, per_sample_weights=w, mode="sum")

    def forward(self, dense: torch.Tensor, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        idx, w = self.attention(item_tokens, item_weights)  # normalise(weighted sum) == normalise(weighted mean)
        pooled = nn.functional.embedding_bag(idx, self.embedding.weight, per_sample_weights=w, mode="sum")
        if self.split:
            a = nn.functional.normalize(pooled[:, : self.split], dim=1, eps=1e-12)
            b = nn.functional.normalize(pooled[:, self.split :], dim=1, eps=1e-12)
            return torch.cat([a, b], dim=1) * 0.5**0.5
        return nn.functional.normalize(pooled, dim=1, eps=1e-12)


class RecurrentEncoder(ItemPoolEncoder):
    """Recurrent sequence encoder: a GRU over the user's recent items, oldest first, with their time gaps.

    The state keeps, per user, the last ``item_history`` items with their decayed weights
    ``w = 2 ** (-gap / half_life)``; the gap to the user's newest event is read back from ``w``. The
    known items are put in time order (oldest first; items outside the vocabulary and empty slots are
    left out), and each step reads the item's embedding and ``log1p`` of its gap in half-lives. The
    embedding is the L2-normalised mean of the GRU's outputs over those items (``readout="mean"``, the
    kind's default) or its last hidden state (``"last"``); a user with no known item embeds as 0. Rows
    are packed by their own length, so a user's embedding never depends on who else is in the batch.

    Trained like ``item-seq`` (:mod:`encoders.train_items`): the hidden state must predict the items
    of the user's next ``window`` events. It reads the order and the gaps that ``item-seq``'s pooling
    ignores, at the cost of a recurrent step per recent item (docs/performance.md#encoders).

        >>> from state.features import FeatureSpec
        >>> m = RecurrentEncoder(FeatureSpec(item_history=4), dim=8, vocab_size=3).eval()
        >>> _ = m.tokens.copy_(torch.tensor([5, 7, 9], dtype=torch.int32))
        >>> tokens = torch.tensor([[7, 5, -1, -1], [-1, -1, -1, -1]], dtype=torch.int32)
        >>> weights = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
        >>> with torch.no_grad():
        ...     out = m(torch.zeros(2, 0), tokens, weights)
        >>> out.shape, round(float(out[0].norm()), 4), float(out[1].abs().sum())
        (torch.Size([2, 8]), 1.0, 0.0)
    """

    kind = "item-gru"
    uses_items = True

    READOUT = ("last", "mean")

    def __init__(self, spec: FeatureSpec, dim: int = 32, vocab_size: int = 1, readout: str = "mean") -> None:
        super().__init__(spec, dim=dim, vocab_size=vocab_size)
        if readout not in self.READOUT:
            raise ValueError(f"readout must be one of {self.READOUT}, not {readout!r}")
        self.readout = readout
        self.gru = nn.GRU(dim + 1, dim, batch_first=True)

    def pool(self, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        """Each row's readout, unnormalised: the mean of the GRU's outputs or its last state (zeros for a
        row with no known item)."""
        idx, known = self.lookup(item_tokens)
        # oldest first: known items by ascending decayed weight (stable on ties), then the rest
        key = torch.where(known, item_weights, torch.full_like(item_weights, 2.0))
        order = torch.argsort(key, dim=1, stable=True)
        idx, known, w = idx.gather(1, order), known.gather(1, order), item_weights.gather(1, order)
        gap = torch.log1p(-torch.log2(w.clamp(1e-38, 1.0)))  # half-lives to the newest event, compressed
        x = torch.cat([self.embedding(idx), gap.unsqueeze(-1)], dim=-1) * known.unsqueeze(-1)
        lengths = known.sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.gru(packed)
        if self.readout == "last":
            pooled = h[-1]
        else:  # unpacking pads each row's outputs past its length with zeros: their sum is the row's own
            pooled = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0].sum(1)
            pooled = pooled / lengths.clamp_min(1).unsqueeze(-1).to(pooled.dtype)
        return pooled * (lengths > 0).unsqueeze(-1)  # a row with no known item ran one step on zeros

    def forward(self, dense: torch.Tensor, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.pool(item_tokens, item_weights), dim=1, eps=1e-12)


ENCODER_KINDS: dict[str, type[nn.Module]] = {
    StateAutoencoder.kind: StateAutoencoder,
    ItemPoolEncoder.kind: ItemPoolEncoder,
    SequenceEncoder.kind: SequenceEncoder,
    RecurrentEncoder.kind: RecurrentEncoder,
}


def build_model(kind: str, spec: FeatureSpec, config: dict[str, Any]) -> nn.Module:
    try:
        cls = ENCODER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown encoder kind {kind!r}; known: {', '.join(sorted(ENCODER_KINDS))}") from None
    return cls(spec, **config)
