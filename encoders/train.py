"""Train an encoder from a recorded event log (``segstream train-encoder``).

The log is replayed through the consumer's own decoder and
:class:`~state.user_store.UserStore` (same code, same feature configuration),
so training and serving see identical features. ``state-ae`` trains on the
features of users changed in each micro-batch (a seeded reservoir, uniform
over the replay); ``item-pool``, ``item-seq`` and ``item-gru`` on next-item examples
(:mod:`encoders.train_items`). :meth:`TrainConfig.for_kind` holds each kind's
defaults.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from encoders.artifact import EncoderArtifact, save_artifact
from encoders.models import RecurrentEncoder, SequenceEncoder, StateAutoencoder
from eventlogs.recorded import read_event_chunks, read_events
from state.features import DEFAULT_HALF_LIFE_S, FeatureSpec
from state.user_store import Features, UserStore
from state.events import EventDecoder

__all__ = ["TrainConfig", "train_encoder", "replay_features", "category_vocabulary", "TRAINERS", "DEFAULT_KIND", "NEXT_WINDOW_KINDS"]

Progress = Callable[[str], None]

#: what ``segstream train-encoder`` trains without ``--kind`` (and the demo uses): the kind that won on the
#: validation split of ml-latest-small (``segstream evaluate select``, :mod:`evaluation.selection`; docs/encoders.md)
DEFAULT_KIND = "item-seq"
#: the kinds trained on the next-window target (:func:`encoders.train_items.train_sequence`), with the same settings
NEXT_WINDOW_KINDS = ("item-seq", "item-gru")


@dataclass(frozen=True)
class TrainConfig:
    """How to train an encoder. The field defaults are ``state-ae``'s; :meth:`for_kind` gives each kind's
    chosen defaults (``TrainConfig.for_kind()``: the default kind's, what ``segstream train-encoder`` uses)."""

    kind: str = "state-ae"
    dim: int = 16
    hidden: int = 64
    epochs: int = 30
    batch_size: int = 512
    lr: float = 3e-3
    max_samples: int = 200_000
    batch_events: int = 1000  # replay micro-batch: smaller gives more state snapshots
    seed: int = 0
    half_life_s: float = DEFAULT_HALF_LIFE_S
    category_buckets: int = 32
    item_history: int = 16
    # item-pool and item-seq
    min_item_count: int = 2
    max_items: int = 100_000
    item_batch_events: int = 200
    # item-seq only
    window: int = 1  # the context predicts the items of the next `window` events
    attention: str = "uniform"  # how recent items are weighted: uniform, salience, salience+recency (models.SequenceEncoder)
    # the item vectors pooled: learned on next items, the log's co-occurrence SVD (no training), or both side by side
    table: str = "next-window"
    # item-gru only: the embedding is the GRU's outputs averaged over the recent items, or its last state
    readout: str = "mean"

    TABLES = ("next-window", "co-occurrence", "both")

    def __post_init__(self) -> None:
        if self.attention not in SequenceEncoder.ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(SequenceEncoder.ATTENTION)}, not {self.attention!r}")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.table not in self.TABLES:
            raise ValueError(f"table must be one of {', '.join(self.TABLES)}, not {self.table!r}")
        if self.readout not in RecurrentEncoder.READOUT:
            raise ValueError(f"readout must be one of {', '.join(RecurrentEncoder.READOUT)}, not {self.readout!r}")

    @classmethod
    def for_kind(cls, kind: str = DEFAULT_KIND, **overrides: Any) -> TrainConfig:
        """The defaults chosen for each kind (on the validation split of ml-latest-small), with ``overrides``.

        >>> TrainConfig.for_kind().kind == DEFAULT_KIND
        True
        """
        base: dict[str, Any] = {"kind": kind}
        if kind == "item-pool":
            base.update(dim=32, epochs=10, batch_size=512, lr=1e-2, item_history=64)
        elif kind in NEXT_WINDOW_KINDS:  # item-gru: item-seq's chosen settings; its readout chosen on validation
            base.update(dim=32, epochs=5, batch_size=512, lr=1e-2, item_history=64, window=10)
        base.update(overrides)
        return cls(**base)


def category_vocabulary(log_path: str | os.PathLike[str], limit: int) -> tuple[str, ...]:
    """The ``limit`` most frequent categories of the log (ties by name), for fixed category columns."""
    counts: collections.Counter[str] = collections.Counter()
    for ev in read_events(log_path):
        if isinstance(ev, dict) and isinstance(ev.get("categories"), list):
            counts.update(c for c in ev["categories"] if isinstance(c, str))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(c for c, _ in ranked[:limit])


def replay_features(log_path: str | os.PathLike[str], spec: FeatureSpec, *, batch_events: int = 5000,
                    max_samples: int = 200_000, seed: int = 0, progress: Progress | None = None) -> Features:
    """Replay the log through the consumer's state code; a seeded reservoir of changed users' features."""
    decoder = EventDecoder(spec)  # the consumer's own validation: bad records are skipped, as they would be dead-lettered
    store = UserStore(spec, capacity=10_000_000)
    rng = np.random.default_rng([seed, 3])
    dense = np.zeros((max_samples, spec.feature_width), np.float32)
    items = np.full((max_samples, spec.item_history), -1, np.int32)
    weights = np.zeros((max_samples, spec.item_history), np.float32)
    seen = 0
    events = 0
    for chunk in read_event_chunks(log_path, batch_events):
        batch, _ = decoder.decode_objects(chunk)
        events += len(chunk)
        rows = store.apply(batch).rows
        if len(rows) == 0:
            continue
        f = store.features(rows)
        n = len(rows)
        # reservoir sampling (Algorithm R), vectorised per batch
        fill = min(max(0, max_samples - seen), n)
        if fill:
            dense[seen : seen + fill], items[seen : seen + fill], weights[seen : seen + fill] = (
                f.dense[:fill], f.item_tokens[:fill], f.item_weights[:fill])
        if fill < n:
            j = rng.integers(0, seen + fill + np.arange(1, n - fill + 1))
            hit = np.flatnonzero(j < max_samples)
            src = fill + hit
            dense[j[hit]], items[j[hit]], weights[j[hit]] = f.dense[src], f.item_tokens[src], f.item_weights[src]
        seen += n
    if progress:
        progress(f"replayed {events:,} events: {len(store):,} users, {seen:,} state snapshots")
    k = min(seen, max_samples)
    return Features(dense[:k], items[:k], weights[:k])


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for s in range(0, n, size):
        yield order[s : s + size]


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_of: Callable[[torch.Tensor], torch.Tensor], *,
        n: int, epochs: int, batch_size: int, rng: np.random.Generator, progress: Progress,
        digits: int = 4) -> list[float]:
    """The training loop every encoder kind uses: seeded shuffled mini-batches of ``n`` examples,
    ``loss_of(indices)`` per batch, one progress line per epoch. Returns the mean loss per epoch."""
    history: list[float] = []
    for epoch in range(epochs):
        t = time.perf_counter()
        total, count = 0.0, 0
        model.train()
        for idx in _batches(n, batch_size, rng):
            loss = loss_of(torch.from_numpy(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
        progress(f"epoch {epoch + 1}/{epochs}  loss {history[-1]:.{digits}f}  ({time.perf_counter() - t:.2f}s)")
    model.eval()
    return history


def train_state_autoencoder(log_path: str | os.PathLike[str], spec: FeatureSpec, cfg: TrainConfig,
                            progress: Progress) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], int]:
    """Train a :class:`StateAutoencoder`; returns (model, model config, metadata, samples used)."""
    features = replay_features(log_path, spec, batch_events=cfg.batch_events, max_samples=cfg.max_samples,
                               seed=cfg.seed, progress=progress)
    if len(features) == 0:
        raise ValueError(f"{log_path}: no valid events to train on")
    torch.manual_seed(cfg.seed)
    model = StateAutoencoder(spec, dim=cfg.dim, hidden=cfg.hidden)
    x = torch.from_numpy(features.dense)
    model.mean.copy_(x.mean(0))
    model.scale.copy_(x.std(0).clamp_min(1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, 5])
    history = fit(model, opt, lambda idx: model.reconstruction_loss(x[idx]), n=len(x), epochs=cfg.epochs,
                  batch_size=cfg.batch_size, rng=rng, progress=progress, digits=5)
    return model, {"dim": cfg.dim, "hidden": cfg.hidden}, {"loss_history": history}, len(features)


Trainer = Callable[[str, FeatureSpec, TrainConfig, Progress], "tuple[torch.nn.Module, dict[str, Any], dict[str, Any], int]"]


def _from_train_items(name: str) -> Trainer:
    """The trainer ``name`` of :mod:`encoders.train_items`, imported when first called (that module imports
    :func:`fit` from this one)."""
    def train(log_path, spec, cfg, progress):  # type: ignore[no-untyped-def]
        import encoders.train_items

        return getattr(encoders.train_items, name)(log_path, spec, cfg, progress)

    train.__name__ = name
    return train


TRAINERS: dict[str, Trainer] = {"state-ae": train_state_autoencoder, "item-pool": _from_train_items("train_item_pool"),
                               "item-seq": _from_train_items("train_sequence"),
                               "item-gru": _from_train_items("train_recurrent")}


def train_encoder(log_path: str | os.PathLike[str], out_path: str | os.PathLike[str], cfg: TrainConfig = TrainConfig(),
                  *, progress: Progress = print) -> EncoderArtifact:
    if cfg.kind not in TRAINERS:
        raise ValueError(f"unknown encoder kind {cfg.kind!r}; known: {', '.join(sorted(TRAINERS))}")
    t0 = time.perf_counter()
    vocab = category_vocabulary(log_path, max(0, cfg.category_buckets - 8))
    spec = FeatureSpec(category_buckets=cfg.category_buckets, category_vocab=vocab, item_history=cfg.item_history,
                       half_life_s=cfg.half_life_s)
    progress(f"feature spec: {spec.feature_width} features, {len(vocab)} named categories, half-life {spec.half_life_s:.0f}s")
    model, model_config, info, samples = TRAINERS[cfg.kind](log_path, spec, cfg, progress)
    art = EncoderArtifact(
        kind=cfg.kind, feature_spec=spec, config=model_config,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        metadata={"train_config": asdict(cfg), "log": os.path.basename(os.fspath(log_path)),
                  "samples": samples, "seconds": round(time.perf_counter() - t0, 2), **info},
    )
    save_artifact(art, out_path)
    progress(f"saved {cfg.kind} encoder {art.version} to {out_path}")
    return art
