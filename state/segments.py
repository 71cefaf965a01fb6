"""Segment models and the vectorised assignment of users to segments.

A :class:`SegmentModel` is a frozen, versioned snapshot of the clusterer:
centroids plus the stable segment id of each. Users are assigned against the
published snapshot, never against the learner mid-update, so every
segment-change event names the model version that produced it.

Assignment is one numpy pass per micro-batch with hysteresis: a user who
already holds a segment moves only when another centroid is closer by the
relative ``margin``, so users on a boundary do not flap::

    >>> import numpy as np
    >>> m = SegmentModel(1, np.array([[0.0, 0.0], [1.0, 0.0]], np.float32), np.array([10, 11]), 0.0)
    >>> x = np.array([[0.1, 0.0], [0.52, 0.0], [0.52, 0.0]], np.float32)
    >>> seg, dist = assign(m, x, current=np.array([-1, 10, -1]), margin=0.1)
    >>> seg.tolist()   # the 2nd user stays in 10: 11 is closer, but not by 10%
    [10, 10, 11]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SegmentModel", "WarmupBuffer", "assign", "assign_bounds", "squared_distances", "nearest", "kmeans_plus_plus", "lloyd", "best_of_restarts", "inertia"]


_TABLE_IDS = 1 << 20  # segment ids below this are looked up in a table, others by binary search


@dataclass(frozen=True)
class SegmentModel:
    version: int
    centroids: np.ndarray  # float32 [k, dim]
    segment_ids: np.ndarray  # int64 [k], stable ids (never reused)
    event_time: float  # event time at which this version was published

    def __post_init__(self) -> None:
        if len(self.centroids) != len(self.segment_ids):
            raise ValueError("one segment id per centroid")

    @property
    def k(self) -> int:
        return len(self.segment_ids)

    def index_of(self, segment_ids: np.ndarray) -> np.ndarray:
        """Centroid index of each segment id (-1 when the id is not in this model).

        >>> m = SegmentModel(1, np.zeros((3, 2), np.float32), np.array([7, 2, 40]), 0.0)
        >>> m.index_of(np.array([2, 40, 3, -1, 7, 10**9])).tolist()
        [1, 2, -1, -1, 0, -1]
        """
        ids = self.segment_ids
        query = np.asarray(segment_ids, dtype=np.int64)
        if len(ids) == 0:
            return np.full(len(query), -1, dtype=np.int64)
        top = int(ids.max())
        if int(ids.min()) >= 0 and top < _TABLE_IDS:  # small ids: one table lookup
            table = np.full(top + 2, -1, dtype=np.int64)  # the last slot answers every id outside [0, top]
            table[ids] = np.arange(len(ids))
            return table[np.where((query >= 0) & (query <= top), query, top + 1)]
        order = np.argsort(ids)
        sorted_ids = ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, query), 0, len(ids) - 1)
        return np.where(sorted_ids[pos] == query, order[pos], -1)


class WarmupBuffer:
    """The warm-up stage both online clusterers share (mixin): the first users' embeddings are held
    in ``self._warm`` until ``warmup_users`` of them seed the model; then they get their segments."""

    model: SegmentModel | None
    warmup_users: int
    dim: int
    _warm: dict[str, np.ndarray]

    @property
    def warming(self) -> bool:
        return self.model is None

    def add_warmup(self, user_ids: list[str], emb: np.ndarray, event_time: float = float("nan"),
                   events: int = 0) -> None:
        """Hold these users (``events``: the events of the batch that updated them)."""
        for uid, e in zip(user_ids, emb):
            self._warm[uid] = e

    def waiting_users(self) -> set[str]:
        """Users buffered until the model exists (they get a segment when it is seeded)."""
        return set(self._warm)

    def forget(self, user_id: str) -> None:
        self._warm.pop(user_id, None)

    def erase(self, keys: np.ndarray) -> None:
        """Erasure: drop what is kept per user beyond the warm-up buffer (which :meth:`forget` empties),
        found by the users' ``state.user_store.user_keys``. Nothing by default."""

    def ready(self) -> bool:
        return self.model is None and len(self._warm) >= self.warmup_users

    def _take_warm(self) -> tuple[list[str], np.ndarray]:
        """Empty the buffer: the users and their embeddings (float32), in arrival order."""
        users, x = self._warm_arrays()
        self._warm.clear()
        return users, x

    def _warm_arrays(self) -> tuple[list[str], np.ndarray]:
        """The buffered users and their embeddings ([n, dim] float32, also when empty)."""
        users = list(self._warm)
        x = (np.stack([self._warm[u] for u in users]).astype(np.float32) if users
             else np.zeros((0, self.dim), np.float32))
        return users, x

    def _warm_state(self, prefix: str = "warm") -> dict[str, Any]:
        """Checkpoint entries of the buffer (``<prefix>_ids``, ``<prefix>_emb``)."""
        users, x = self._warm_arrays()
        return {f"{prefix}_ids": users, f"{prefix}_emb": x}

    def _load_warm(self, state: dict[str, Any], prefix: str = "warm") -> None:
        self._warm = dict(zip(state[f"{prefix}_ids"], np.asarray(state[f"{prefix}_emb"], np.float32)))


def squared_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """[n, k] squared Euclidean distances, computed as one matrix product."""
    x = x.astype(np.float32, copy=False)
    c = c.astype(np.float32, copy=False)
    d2 = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``c`` for each row of ``x`` (what ``squared_distances(x, c).argmin(1)``
    gives, without the ``|x|²`` term, which is the same for every centre: one product and one add).

    >>> nearest(np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([[5.0, 5.0], [1.0, 0.0]])).tolist()
    [1, 0]
    """
    x = x.astype(np.float32, copy=False)
    c = c.astype(np.float32, copy=False)
    return (x @ (c.T * np.float32(-2.0)) + (c * c).sum(1)).argmin(axis=1)


def assign(model: SegmentModel, x: np.ndarray, current: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Segment id and distance for each row of ``x``, with hysteresis against ``current`` (-1: none)."""
    seg, dist, _ = assign_bounds(model, x, current, margin)
    return seg, dist


def assign_bounds(model: SegmentModel, x: np.ndarray, current: np.ndarray,
                  margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`assign`, plus each row's distance to the nearest centroid *other* than the one it gets
    (inf with a single centroid): the bounds :class:`state.relabel.LabelBounds` starts from.

    >>> m = SegmentModel(1, np.array([[0.0], [1.0], [3.0]], np.float32), np.array([5, 6, 7]), 0.0)
    >>> seg, dist, other = assign_bounds(m, np.array([[0.2], [2.9]], np.float32), np.array([-1, -1]), 0.0)
    >>> seg.tolist(), dist.astype(float).round(2).tolist(), other.astype(float).round(2).tolist()
    ([5, 7], [0.2, 0.1], [0.8, 1.9])
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    d2 = squared_distances(x, model.centroids)
    best = d2.argmin(axis=1)
    rows = np.arange(n)
    best_d = np.sqrt(d2[rows, best])
    cur_ix = model.index_of(current.astype(np.int64))
    has_cur = (current >= 0) & (cur_ix >= 0)
    cur_d = np.sqrt(d2[rows, np.maximum(cur_ix, 0)])
    move = ~has_cur | (best_d < cur_d * (1.0 - margin))
    seg = np.where(move, model.segment_ids[best], current).astype(np.int64)
    dist = np.where(move, best_d, cur_d).astype(np.float32)
    if model.k < 2:
        return seg, dist, np.full(n, np.inf, np.float32)
    d2[rows, np.where(move, best, cur_ix)] = np.inf
    return seg, dist, np.sqrt(d2.min(axis=1)).astype(np.float32)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (D² sampling), deterministic for a seeded ``rng``."""
    n = len(x)
    if n < k:
        raise ValueError(f"need at least k={k} points to seed, got {n}")
    centers = [x[rng.integers(n)]]
    d2 = squared_distances(x, np.asarray(centers))[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:  # every point already on a centre: pick distinct rows
            idx = rng.integers(n)
        else:
            idx = int(np.searchsorted(np.cumsum(d2 / total), rng.random()))
            idx = min(idx, n - 1)
        centers.append(x[idx])
        d2 = np.minimum(d2, squared_distances(x, x[idx : idx + 1])[:, 0])
    return np.asarray(centers, dtype=np.float32)


def lloyd(x: np.ndarray, centers: np.ndarray, iterations: int = 20) -> np.ndarray:
    """A few batch k-means (Lloyd) iterations from ``centers``; empty clusters keep their centre.

    Vectorised: cluster sums are one (k x n) @ (n x dim) product; stops when no label changes.
    """
    c = centers.astype(np.float32).copy()
    k = len(c)
    x = x.astype(np.float32, copy=False)
    prev = None
    cols = np.arange(len(x))
    for _ in range(iterations):
        lab = nearest(x, c)
        if prev is not None and np.array_equal(lab, prev):
            break
        prev = lab
        counts = np.bincount(lab, minlength=k)
        onehot = np.zeros((k, len(x)), dtype=np.float32)
        onehot[lab, cols] = 1.0
        sums = onehot @ x
        live = counts > 0
        c[live] = sums[live] / counts[live, None]
    return c


def inertia(x: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared distances of each point to its nearest centre."""
    return float(squared_distances(x, centers).min(axis=1).sum())


def best_of_restarts(x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 8, iterations: int = 30) -> np.ndarray:
    """k-means++ then Lloyd, ``restarts`` times; the centres with the lowest inertia win."""
    best, best_cost = None, np.inf
    for _ in range(max(1, restarts)):
        c = lloyd(x, kmeans_plus_plus(x, k, rng), iterations)
        cost = inertia(x, c)
        if cost < best_cost:
            best, best_cost = c, cost
    assert best is not None
    return best
