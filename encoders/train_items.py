"""Self-supervised training of the item-aware encoder (``item-pool``) from a recorded log.

The log is replayed through the consumer's own decoder and
:class:`~state.user_store.UserStore`. Before each micro-batch is applied,
every event of a user who already has a state becomes one training example:
the *context* is that user's recent items with their decayed weights, exactly
as the consumer would hand them to the encoder, and the *target* is the item
the event touches. The model pools the context's item embeddings (the served
embedding, before normalisation) and must rank the target first among the
whole vocabulary (softmax cross-entropy, popularity absorbed by a per-item
bias). Items that follow the same items in users' sequences therefore get
close embeddings, and so do users who touch them, with or without shared
categories.

    >>> import os, tempfile
    >>> from eventlogs.recorded import write_events
    >>> evs = [{"user_id": u, "action": "view", "ts": 1e9 + t, "item_id": (u % 2) * 10 + t % 5}
    ...        for t in range(20) for u in range(20)]
    >>> log = os.path.join(tempfile.mkdtemp(), "log.msgpack")
    >>> _ = write_events(log, evs)
    >>> from state.features import FeatureSpec
    >>> spec = FeatureSpec(item_history=4)
    >>> vocab = item_vocabulary(log, spec, min_count=2)
    >>> len(vocab)   # items 0-4 and 10-14
    10
    >>> ex = next_item_examples(log, spec, vocab, batch_events=20)
    >>> ex.tokens.shape[1], len(ex.targets) == 19 * 20   # every event after a user's first
    (4, True)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from encoders.cooccurrence import co_occurrence_vectors
from encoders.models import ItemPoolEncoder, RecurrentEncoder, SequenceEncoder
from encoders.train import fit
from eventlogs.recorded import read_event_chunks
from state.features import FeatureSpec
from state.user_store import UserStore
from state.events import EventDecoder

__all__ = ["item_vocabulary", "next_item_examples", "NextItemExamples", "train_item_pool", "train_sequence",
           "train_recurrent"]

Progress = Callable[[str], None]


def item_vocabulary(log_path: str | os.PathLike[str], spec: FeatureSpec, *, min_count: int = 2,
                    max_items: int = 100_000, batch_events: int = 5000) -> np.ndarray:
    """Sorted item tokens seen at least ``min_count`` times (the ``max_items`` most frequent)."""
    decoder = EventDecoder(spec)
    counts: Counter[int] = Counter()
    for chunk in read_event_chunks(log_path, batch_events):
        batch, _ = decoder.decode_objects(chunk)
        t = batch.item_tokens[batch.item_tokens >= 0]
        u, c = np.unique(t, return_counts=True)
        counts.update(dict(zip(u.tolist(), c.tolist())))
    ranked = sorted((tok for tok, c in counts.items() if c >= min_count), key=lambda tok: (-counts[tok], tok))
    return np.sort(np.asarray(ranked[:max_items], dtype=np.int64))


@dataclass
class NextItemExamples:
    tokens: np.ndarray  # int32 [n, item_history]: the user's recent items before the event
    weights: np.ndarray  # float32 [n, item_history]: their decayed weights
    targets: np.ndarray  # int64 [n]: vocabulary index of the event's item
    #: every in-vocabulary event of each user, in replay order, back to back: user u's items are
    #: ``sequence[starts[u] : starts[u] + lengths[u]]`` (vocabulary indices)
    sequence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: per example: its event's place in ``sequence`` and the end of its user's run there
    position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def window(self, window: int) -> np.ndarray:
        """int64 [n, window]: the items of each example's event and of its user's next ``window - 1``
        in-vocabulary events (-1 past the user's last); column 0 is ``targets``.

        >>> ex = NextItemExamples(np.zeros((2, 1), np.int32), np.zeros((2, 1), np.float32), np.array([5, 6]),
        ...                       sequence=np.array([5, 6, 7]), position=np.array([0, 1]), end=np.array([3, 3]))
        >>> ex.window(3).tolist()
        [[5, 6, 7], [6, 7, -1]]
        """
        pos = self.position[:, None] + np.arange(window)
        ok = pos < self.end[:, None]
        return np.where(ok, self.sequence[np.minimum(pos, max(len(self.sequence) - 1, 0))], -1)


def next_item_examples(log_path: str | os.PathLike[str], spec: FeatureSpec, vocab: np.ndarray, *,
                       batch_events: int = 200, max_samples: int = 200_000, seed: int = 0,
                       progress: Progress | None = None) -> NextItemExamples:
    """(context, next item) pairs from a replay through the consumer's state code; a seeded reservoir.

    Besides the sampled examples, every user's in-vocabulary items are kept in replay order (4 bytes
    per event in the vocabulary), so that an example can also be paired with its user's next items
    (:meth:`NextItemExamples.window`).
    """
    decoder = EventDecoder(spec)
    store = UserStore(spec, capacity=10_000_000)
    rng = np.random.default_rng([seed, 11])
    N = spec.item_history
    tokens = np.full((max_samples, N), -1, np.int32)
    weights = np.zeros((max_samples, N), np.float32)
    targets = np.zeros(max_samples, np.int64)
    user_of = np.zeros(max_samples, np.int64)  # user number of each example
    nth = np.zeros(max_samples, np.int64)  # the example's event is its user's nth in-vocabulary event
    users: dict[str, int] = {}
    seqs: list[list[int]] = []
    seen = 0
    events = 0
    for chunk in read_event_chunks(log_path, batch_events):
        batch, _ = decoder.decode_objects(chunk)
        events += len(chunk)
        if len(batch):
            tok = batch.item_tokens
            pos = np.searchsorted(vocab, tok).clip(0, max(len(vocab) - 1, 0))
            in_vocab = (tok >= 0) & (vocab[pos] == tok) if len(vocab) else np.zeros(len(tok), bool)
            # each in-vocabulary event's user number and rank among that user's events (batch order = log order)
            iv = np.flatnonzero(in_vocab)
            unum = np.fromiter((users.setdefault(batch.user_ids[i], len(users)) for i in iv.tolist()), np.int64, len(iv))
            while len(seqs) < len(users):
                seqs.append([])
            rank = np.empty(len(iv), np.int64)
            for j, (u, item) in enumerate(zip(unum.tolist(), pos[iv].tolist())):
                rank[j] = len(seqs[u])
                seqs[u].append(item)
            ev_unum = np.full(len(tok), -1, np.int64)
            ev_rank = np.full(len(tok), -1, np.int64)
            ev_unum[iv], ev_rank[iv] = unum, rank
            rows = store.rows_or_missing(batch.user_ids)
            ev = np.flatnonzero(in_vocab & (rows >= 0))
            if len(ev):
                has_items = store.items[rows[ev]].max(axis=1) >= 0
                ev = ev[has_items]
            if len(ev):
                f = store.features(rows[ev])
                n = len(ev)
                fill = min(max(0, max_samples - seen), n)
                src = np.arange(fill)
                dst = seen + src
                if fill < n:  # reservoir sampling (Algorithm R), vectorised per batch
                    j = rng.integers(0, seen + fill + np.arange(1, n - fill + 1))
                    hit = np.flatnonzero(j < max_samples)
                    src = np.concatenate([src, fill + hit])
                    dst = np.concatenate([dst, j[hit]])
                tokens[dst], weights[dst], targets[dst] = f.item_tokens[src], f.item_weights[src], pos[ev][src]
                user_of[dst], nth[dst] = ev_unum[ev][src], ev_rank[ev][src]
                seen += n
        store.apply(batch)
    if progress:
        progress(f"replayed {events:,} events: {len(store):,} users, {seen:,} next-item examples, vocabulary {len(vocab):,} items")
    k = min(seen, max_samples)
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    starts = np.cumsum(lengths) - lengths
    sequence = np.fromiter((i for s in seqs for i in s), np.int64, int(lengths.sum()))
    u = user_of[:k]
    return NextItemExamples(tokens[:k], weights[:k], targets[:k], sequence=sequence, starts=starts, lengths=lengths,
                            position=starts[u] + nth[:k] if len(starts) else nth[:k], end=starts[u] + lengths[u] if len(starts) else nth[:k])


def _vocabulary_and_examples(log_path: str | os.PathLike[str], spec: FeatureSpec, cfg: Any,
                             progress: Progress) -> tuple[np.ndarray, NextItemExamples]:
    """What both item encoders train on: the item vocabulary and the next-item examples of the log
    (a clear error where the log has neither); seeds torch for the model built next."""
    vocab = item_vocabulary(log_path, spec, min_count=cfg.min_item_count, max_items=cfg.max_items)
    if len(vocab) == 0:
        raise ValueError(f"{log_path}: no item seen {cfg.min_item_count}+ times: nothing to learn item embeddings from")
    ex = next_item_examples(log_path, spec, vocab, batch_events=cfg.item_batch_events, max_samples=cfg.max_samples,
                            seed=cfg.seed, progress=progress)
    if len(ex) == 0:
        raise ValueError(f"{log_path}: no user touched two known items: no next-item examples")
    torch.manual_seed(cfg.seed)
    return vocab, ex


def train_item_pool(log_path: str | os.PathLike[str], spec: FeatureSpec, cfg: Any,
                    progress: Progress) -> tuple[ItemPoolEncoder, dict[str, Any], dict[str, Any], int]:
    """Train an :class:`ItemPoolEncoder`; returns (model, model config, metadata, examples used)."""
    vocab, ex = _vocabulary_and_examples(log_path, spec, cfg, progress)
    model = ItemPoolEncoder(spec, dim=cfg.dim, vocab_size=len(vocab))
    model.tokens.copy_(torch.from_numpy(vocab.astype(np.int32)))
    torch.nn.init.normal_(model.embedding.weight, std=0.1)
    torch.nn.init.normal_(model.output.weight, std=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    tokens, weights, targets = (torch.from_numpy(a) for a in (ex.tokens, ex.weights, ex.targets))
    rng = np.random.default_rng([cfg.seed, 13])

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        logits = model.pool(tokens[idx], weights[idx]) @ model.output.weight.T + model.bias
        return torch.nn.functional.cross_entropy(logits, targets[idx])

    history = fit(model, opt, loss_of, n=len(ex), epochs=cfg.epochs, batch_size=cfg.batch_size, rng=rng,
                  progress=progress)
    return model, {"dim": cfg.dim, "vocab_size": len(vocab)}, {"loss_history": history, "vocabulary": len(vocab)}, len(ex)


def train_sequence(log_path: str | os.PathLike[str], spec: FeatureSpec, cfg: Any,
                   progress: Progress) -> tuple[SequenceEncoder, dict[str, Any], dict[str, Any], int]:
    """Train a :class:`SequenceEncoder`; returns (model, config, metadata, examples).

    ``cfg.table`` says which item vectors it pools. ``next-window``: each example's context (the
    user's recent items and time gaps before an event, as the consumer holds them) must predict the
    items of that event and of the user's next ``cfg.window - 1`` events: softmax cross-entropy over
    the vocabulary (per-item bias for popularity), averaged over the window. A window wider than one
    asks the embedding for the user's taste over the coming events rather than for the very next item
    only. ``co-occurrence``: the items' truncated-SVD vectors of the log's user x item matrix
    (:mod:`encoders.cooccurrence`; nothing is trained). ``both``: the two side by side, ``cfg.dim``
    wide each, each half of the embedding normalised on its own.
    """
    vocab, ex = _vocabulary_and_examples(log_path, spec, cfg, progress)
    info: dict[str, Any] = {"vocabulary": len(vocab), "loss_history": []}
    tables = []
    model = _fit_next_window(vocab, ex, spec, cfg, progress, info) if cfg.table != "co-occurrence" else None
    if model is not None:
        tables.append(model.embedding.weight.detach())
    if cfg.table != "next-window":
        co = co_occurrence_vectors(ex.sequence, ex.starts, ex.lengths, vocab_size=len(vocab), dim=cfg.dim, seed=cfg.seed)
        progress(f"co-occurrence vectors: {cfg.dim} components of the {len(ex.lengths):,} users x {len(vocab):,} items matrix")
        tables.append(torch.from_numpy(co))
    if len(tables) == 1 and model is not None:
        return model, {"dim": cfg.dim, "vocab_size": len(vocab), "attention": cfg.attention}, info, len(ex)
    split = cfg.dim if len(tables) == 2 else 0
    width = sum(t.shape[1] for t in tables)
    out = SequenceEncoder(spec, dim=width, vocab_size=len(vocab), attention=cfg.attention, split=split)
    with torch.no_grad():
        out.tokens.copy_(torch.from_numpy(vocab.astype(np.int32)))
        out.embedding.weight.copy_(torch.cat(tables, dim=1))
        out.output.weight.zero_()  # the training head is not served
        if model is not None:  # the learned attention, if any
            out.salience.copy_(model.salience)
            out.recency.copy_(model.recency)
    out.eval()
    return out, {"dim": width, "vocab_size": len(vocab), "attention": cfg.attention, "split": split}, info, len(ex)


def _fit_next_window(vocab: np.ndarray, ex: NextItemExamples, spec: FeatureSpec, cfg: Any, progress: Progress,
                     info: dict[str, Any]) -> SequenceEncoder:
    """The next-window table (and attention): see :func:`train_sequence`; fills ``info``."""
    model = SequenceEncoder(spec, dim=cfg.dim, vocab_size=len(vocab), attention=cfg.attention)
    learned = {"uniform": (), "salience": ("salience",), "salience+recency": ("salience", "recency")}[cfg.attention]
    for name in ("salience", "recency"):
        getattr(model, name).requires_grad_(name in learned)
    _fit_window(model, vocab, ex, cfg, progress, info)
    info["recency"] = float(model.recency.detach()[0])
    info["salience_spread"] = float(model.salience.detach().std()) if len(vocab) > 1 else 0.0
    return model


def _fit_window(model: ItemPoolEncoder, vocab: np.ndarray, ex: NextItemExamples, cfg: Any, progress: Progress,
                info: dict[str, Any]) -> None:
    """Train ``model`` (its trainable parameters) so that its pooled context predicts the items of each
    example's next ``cfg.window`` events: softmax over the vocabulary, per-item bias, loss averaged over
    the window. Fills ``info["loss_history"]``."""
    model.tokens.copy_(torch.from_numpy(vocab.astype(np.int32)))
    torch.nn.init.normal_(model.embedding.weight, std=0.1)
    torch.nn.init.normal_(model.output.weight, std=0.1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    tokens, weights = torch.from_numpy(ex.tokens), torch.from_numpy(ex.weights)
    window = torch.from_numpy(ex.window(cfg.window))
    rng = np.random.default_rng([cfg.seed, 13])

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(model.pool(tokens[idx], weights[idx]) @ model.output.weight.T + model.bias, dim=1)
        t = window[idx]
        mask = (t >= 0).to(logp.dtype)
        return -(logp.gather(1, t.clamp_min(0)) * mask).sum() / mask.sum()

    info["loss_history"] = fit(model, opt, loss_of, n=len(ex), epochs=cfg.epochs, batch_size=cfg.batch_size, rng=rng,
                               progress=progress)


def train_recurrent(log_path: str | os.PathLike[str], spec: FeatureSpec, cfg: Any,
                    progress: Progress) -> tuple[RecurrentEncoder, dict[str, Any], dict[str, Any], int]:
    """Train a :class:`RecurrentEncoder` (``item-gru``) on the same next-window target as ``item-seq``
    (:func:`train_sequence`); returns (model, config, metadata, examples)."""
    vocab, ex = _vocabulary_and_examples(log_path, spec, cfg, progress)
    model = RecurrentEncoder(spec, dim=cfg.dim, vocab_size=len(vocab), readout=cfg.readout)
    info: dict[str, Any] = {"vocabulary": len(vocab)}
    _fit_window(model, vocab, ex, cfg, progress, info)  # (fit leaves the model in eval mode)
    return model, {"dim": cfg.dim, "vocab_size": len(vocab), "readout": cfg.readout}, info, len(ex)
