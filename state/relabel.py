"""Which held labels a new model version may have made wrong, without re-embedding every user.

When a model version is published, a user's held segment may no longer be the
one the model gives them: their own segment ended, moved away, or a closer one
appeared. Re-embedding every user at every version is out of the question at
a million users, so each row keeps two bounds (Hamerly's k-means bounds):

- ``upper``: at least the distance from the user to the centroid of their segment;
- ``lower``: at most the distance from the user to any *other* centroid.

Both are exact when the user is assigned, against that version of the model
(the row's *anchor*). A user's embedding only changes with their own events
(features are taken as of their last event), so between events only the
centroids move: at a later version ``upper`` is the exact one plus how far the
user's own centroid is from where it was at the anchor, ``lower`` the exact one
less the largest such move of any other centroid, capped by the distance to
each centroid born since (triangle inequality); ``gap - upper`` (``gap``: the nearest other centroid of the new
model) is a lower bound too. While ``lower >= upper * (1 - margin)`` no
centroid can be closer by the hysteresis margin: the held label is certified.

:meth:`LabelBounds.on_publish` returns the rows to re-assign, in the order they
should be taken: users whose segment ended first (they must move), then the
uncertified ones, most likely to move first (largest ``upper * (1 - margin) / lower``).

    >>> from state.segments import SegmentModel
    >>> old = SegmentModel(1, np.array([[0.0, 0.0], [4.0, 0.0]], np.float32), np.array([0, 1]), 0.0)
    >>> b = LabelBounds()
    >>> b.set_exact(np.array([0, 1, 2]), np.array([0.5, 1.9, 0.1]), np.array([3.6, 2.1, 3.9]), old)
    >>> new = SegmentModel(2, np.array([[0.0, 0.0], [3.0, 0.0]], np.float32), np.array([0, 1]), 0.0)
    >>> b.on_publish(old, new, np.array([0, 0, 2]), margin=0.05).tolist()   # row 2's segment ended
    [2, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.row_queue import RowQueue
from state.segments import SegmentModel, squared_distances

__all__ = ["LabelBounds", "LabelFollower", "LABELS_SETTLED"]

def _up(x: np.ndarray) -> np.ndarray:
    """``x`` as float16, rounded up: an upper bound stays one."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # past float16's range: inf, as an upper bound may be
        h = x.astype(np.float16)
    low = h.astype(np.float32) < x
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def _down(x: np.ndarray) -> np.ndarray:
    """``x`` as float16, rounded down: a lower bound stays one (beyond float16's range: its largest value)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # past float16's range: inf, taken down to the largest value below
        h = x.astype(np.float16)
    high = h.astype(np.float32) > x
    h[high] = np.nextafter(h[high], np.float16(-np.inf))
    return h


#: share of labelled users certified by the model above which held segment sizes are taken at their word
LABELS_SETTLED = 0.97


class LabelBounds:
    """Per row: the two bounds as measured at assignment, and the model version they were measured
    against (an *anchor*: that version's centroids are kept, at most :attr:`ANCHORS` of them).

    At a new version the bounds are moved from the anchor straight to it: ``upper`` grows by the
    distance between the user's centroid at the anchor and now, ``lower`` shrinks by the largest such
    distance of any other centroid (and is capped by every centroid born since). Summing the moves of
    every version in between instead (Hamerly's bookkeeping) adds up the jitter of centres that
    hardly go anywhere: at a million users and a version per micro-batch, most users go hundreds of
    versions between re-assignments, and the summed bounds certified ~1% of labels. When more anchors
    are needed, the oldest one's rows are moved to the newest (one jump, by the same rule).

    The bounds are kept as float16 (4 bytes a row instead of 8), ``upper`` rounded up and ``lower``
    rounded down, so they stay bounds: the rounding (under 0.05% of a distance) only ever leaves a
    label uncertified that exact bounds would certify within that much of the margin, never the other
    way; distances past float16's range (65,504) leave the label uncertified. The moves between
    versions are computed in float32.
    """

    ANCHORS = 64

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity  # rows there can ever be (the store's; 0: unknown): growth stops there
        self.upper = np.zeros(0, dtype=np.float16)
        self.lower = np.zeros(0, dtype=np.float16)
        self.anchor = np.zeros(0, dtype=np.int8)  # slot of each row's anchor (-1: nothing known)
        self._versions = np.full(self.ANCHORS, -1, dtype=np.int64)  # model version held by each slot
        self._models: list[SegmentModel | None] = [None] * self.ANCHORS

    def _grow(self, n: int) -> None:
        if n > len(self.upper):
            size = max(n, 2 * len(self.upper))
            if self.capacity:  # doubling past the store's capacity would hold rows no user can have
                size = max(n, min(size, self.capacity))
            for name, fill, dtype in (("upper", np.inf, np.float16), ("lower", -np.inf, np.float16),
                                      ("anchor", -1, np.int8)):
                grown = np.full(size, fill, dtype=dtype)
                old = getattr(self, name)
                grown[: len(old)] = old
                setattr(self, name, grown)

    def _slot(self, model: SegmentModel, segment: np.ndarray | None = None, margin: float = 0.0) -> int:
        """The slot anchoring ``model``; made when missing, freeing the oldest slot if need be (its rows
        move to the new anchor, or, without ``segment``, are forgotten)."""
        hit = np.flatnonzero(self._versions == model.version)
        if len(hit):
            return int(hit[0])
        free = np.flatnonzero(self._versions < 0)
        slot = int(free[0]) if len(free) else int(self._versions.argmin())
        old = self._models[slot]
        self._versions[slot], self._models[slot] = model.version, model
        if old is not None:
            rows = np.flatnonzero(self.anchor == slot)
            if segment is None or len(rows) == 0:
                self.anchor[rows] = -1
            else:
                u, lo = self._moved(old, model, segment[rows].astype(np.int64), self.upper[rows], self.lower[rows])
                self.upper[rows], self.lower[rows] = _up(u), _down(lo)  # bounds now measured against ``model``
                self.anchor[rows] = np.where(np.isfinite(u), slot, -1)
        return slot

    @staticmethod
    def _tables(anchor: SegmentModel, model: SegmentModel) -> tuple[np.ndarray, float, np.ndarray]:
        """Per centroid of ``model``: how far it is from where it was at ``anchor`` (inf: born since);
        the largest such move; per centroid, the distance to the nearest centroid born since (inf: none)."""
        at = anchor.index_of(model.segment_ids)
        known = at >= 0
        own = np.full(model.k, np.inf, dtype=np.float32)
        if known.any():
            own[known] = np.sqrt(((model.centroids[known] - anchor.centroids[at[known]]) ** 2).sum(axis=1))
        most = float(own[known].max()) if known.any() else 0.0
        newborn = np.full(model.k, np.inf, dtype=np.float32)
        if (~known).any():
            newborn = np.sqrt(squared_distances(model.centroids, model.centroids[~known])).min(axis=1)
        return own, most, newborn

    def _moved(self, anchor: SegmentModel, model: SegmentModel, held: np.ndarray, upper: np.ndarray,
               lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds measured against ``anchor``, moved to ``model`` (``held``: each row's segment id)."""
        own, most, newborn = self._tables(anchor, model)
        j = model.index_of(held)
        ok = j >= 0
        jj = np.where(ok, j, 0)
        u = np.where(ok, upper + own[jj], np.inf).astype(np.float32)
        lo = np.minimum(lower - most, newborn[jj] - u).astype(np.float32)
        return u, np.where(ok, lo, -np.inf).astype(np.float32)

    def set_exact(self, rows: np.ndarray, upper: np.ndarray, lower: np.ndarray, model: SegmentModel) -> None:
        """Bounds measured at assignment against ``model``: distance to the held centroid and to the
        nearest other one."""
        if len(rows) == 0:
            return
        self._grow(int(rows.max()) + 1)
        slot = self._slot(model)
        self.upper[rows] = _up(upper)
        self.lower[rows] = _down(lower)
        self.anchor[rows] = slot

    def known(self, rows: np.ndarray) -> np.ndarray:
        """Whether both bounds of each row are known (False: never set, forgotten, or left to the next version)."""
        out = np.zeros(len(rows), dtype=bool)
        inside = rows < len(self.upper)
        r = rows[inside]
        out[inside] = (self.anchor[r] >= 0) & (self.lower[r] > -np.inf)
        return out

    def forget(self, rows: np.ndarray) -> None:
        """Nothing known of these rows (handed to other users): re-checked at the next version."""
        rows = rows[rows >= 0]
        if len(rows):
            self._grow(int(rows.max()) + 1)
            self.anchor[rows] = -1

    def state(self) -> dict[str, np.ndarray]:
        """Plain arrays, for checkpoints (:meth:`load` is the inverse)."""
        held = [m for m in self._models if m is not None]
        return {"upper": self.upper, "lower": self.lower, "anchor": self.anchor, "versions": self._versions,
                "k": np.array([m.k if m is not None else 0 for m in self._models], dtype=np.int64),
                "ids": np.concatenate([m.segment_ids for m in held]) if held else np.zeros(0, np.int64),
                "centroids": np.concatenate([m.centroids for m in held]) if held else np.zeros((0, 0), np.float32)}

    def load(self, state: Any) -> None:
        if not isinstance(state, dict):  # an older checkpoint's [2, rows] bounds, without anchors: unknown
            self.__init__(self.capacity)  # type: ignore[misc]
            return
        self.upper = _up(state["upper"])  # float32 in checkpoints written before the bounds were float16
        self.lower = _down(state["lower"])
        self.anchor = np.asarray(state["anchor"], dtype=np.int8).copy()
        self._versions = np.asarray(state["versions"], dtype=np.int64).copy()
        self._models = [None] * self.ANCHORS
        at = 0
        for slot, k in enumerate(np.asarray(state["k"]).tolist()):
            if self._versions[slot] >= 0:
                self._models[slot] = SegmentModel(int(self._versions[slot]),
                                                  np.asarray(state["centroids"][at: at + k], np.float32),
                                                  np.asarray(state["ids"][at: at + k], np.int64), 0.0)
                at += k

    def nbytes(self) -> int:
        """Bytes of the per-row bounds and anchors."""
        return self.upper.nbytes + self.lower.nbytes + self.anchor.nbytes

    def reset(self) -> None:
        """Forget every row's bounds (after a restore without them)."""
        self.anchor[:] = -1

    def on_publish(self, previous: SegmentModel, model: SegmentModel, segment: np.ndarray,
                   margin: float, ordered: int = 0) -> np.ndarray:
        """Rows to re-assign under ``model`` (``segment``: held segment per row, -1: none); ``previous``
        only names the version before. ``ordered`` > 0: only that many of the uncertified are sorted by
        urgency, the others follow in row order (a full sort of a million rows at every version costs
        more than the re-assignment it orders)."""
        n = len(segment)
        self._grow(n)
        self._slot(model, segment, margin)  # rows of an anchor that had to go move to this version
        k, A = model.k, self.ANCHORS
        ix = model.index_of(segment.astype(np.int64))
        held = segment >= 0
        ended = held & (ix < 0)
        # per anchor slot x centroid, one extra row (no anchor) and column (no centroid): moves since the
        # anchor, newborn caps. Whole columns below, no gather of the held rows: a million rows per version
        own = np.full((A + 1, k + 1), np.inf, dtype=np.float32)
        most = np.full(A + 1, np.inf, dtype=np.float32)
        newborn = np.full((A + 1, k + 1), -np.inf, dtype=np.float32)
        for slot in np.flatnonzero(self._versions >= 0).tolist():  # at most ANCHORS x k: no pass over rows
            own[slot, :k], most[slot], newborn[slot, :k] = self._tables(self._models[slot], model)
        cc = np.sqrt(squared_distances(model.centroids, model.centroids))
        np.fill_diagonal(cc, np.inf)
        gap = np.full(k + 1, -np.inf, dtype=np.float32)
        gap[:k] = cc.min(axis=1) if k > 1 else np.inf
        a = self.anchor[:n].astype(np.intp)
        a[a < 0] = A
        j = np.where(ix >= 0, ix, k)
        flat = a * (k + 1) + j
        u = self.upper[:n] + own.ravel()[flat]
        lo = self.lower[:n] - most[a]
        np.minimum(lo, newborn.ravel()[flat] - u, out=lo)
        np.maximum(lo, gap[j] - u, out=lo)  # what the new model's centre gaps guarantee
        need = ~(lo >= u * np.float32(1.0 - margin))  # nan (inf - inf: nothing known) is not certified
        need &= held
        need &= ~ended
        cand = np.flatnonzero(need)
        u, lo = u[cand], lo[cand]
        with np.errstate(invalid="ignore"):
            urgency = np.nan_to_num((u * (1.0 - margin) - lo) / np.maximum(u, 1e-12), nan=np.inf, posinf=np.inf)
        if 0 < ordered < len(cand):  # only the head of the queue is taken before the next version: sort that
            head = np.argpartition(-urgency, ordered)[:ordered]
            rest = np.ones(len(cand), dtype=bool)
            rest[head] = False
            order = np.concatenate([head[np.argsort(-urgency[head], kind="stable")], np.flatnonzero(rest)])
        else:
            order = np.argsort(-urgency, kind="stable")
        return np.concatenate([np.flatnonzero(ended), cand[order]])


class LabelFollower:
    """The bounds and the model version they refer to: turns each new version into a re-assignment queue."""

    def __init__(self, capacity: int = 0) -> None:
        self.bounds = LabelBounds(capacity)
        self.model: SegmentModel | None = None

    def follow(self, model: SegmentModel | None, segment: np.ndarray, margin: float, queue: RowQueue,
               ordered: int = 0) -> RowQueue:
        """The queue after ``model`` (unchanged while the version is the one followed already).

        Order: rows queued without a segment (restored users), then users whose segment ended, then
        users whose label the bounds no longer certify, most likely to move first. Rebuilt at each
        version, since the bounds only ever widen until a user is re-assigned."""
        if model is None or model is self.model:
            return queue
        previous, self.model = self.model, model
        if previous is None:
            return queue
        queued = queue.rows()
        todo = self.bounds.on_publish(previous, model, segment, margin, ordered)
        # disjoint: queued rows without a segment, users of ended segments, the uncertified
        return RowQueue.of_distinct(np.concatenate([queued[segment[queued] < 0], todo]))

    def restart(self, model: SegmentModel | None) -> None:
        """After a restore without bounds: nothing known of any row (each is measured again), following
        the restored model."""
        self.bounds.reset()
        self.model = model

    @staticmethod
    def agreement(queue: RowQueue, segment: np.ndarray, labelled: int) -> float:
        """Share of the ``labelled`` users not queued: certified to hold what the model gives them
        (a lower bound of the share that does: some queued users hold it too).

        >>> LabelFollower.agreement(RowQueue(np.array([0, 2])), np.array([3, 3, -1]), labelled=2)
        0.5
        """
        if labelled <= 0:
            return 1.0
        return 1.0 - queue.count(segment >= 0) / labelled
