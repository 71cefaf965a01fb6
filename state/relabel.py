"""Which held labels a new model version may have made wrong, without re-embedding every user.

When a model version is published, a user's held segment may no longer be the
one the model gives them: their own segment ended, moved away, or a closer one
appeared. Re-embedding every user at every version is out of the question at
a million users, so each row keeps two bounds (Hamerly's k-means bounds):

- ``upper``: at least the distance from the user to the centroid of their segment;
- ``lower``: at most the distance from the user to any *other* centroid.

Both are exact when the user is assigned. A user's embedding only changes with
their own events (features are taken as of their last event), so between
events only the centroids move: at each version ``upper`` grows by how far the
user's own centroid moved, ``lower`` shrinks by the largest move of any other
centroid and is capped by the distance to each newly born centroid (triangle
inequality); ``gap - upper`` (``gap``: the nearest other centroid of the new
model) is a lower bound too. While ``lower >= upper * (1 - margin)`` no
centroid can be closer by the hysteresis margin: the held label is certified.

:meth:`LabelBounds.on_publish` returns the rows to re-assign, in the order they
should be taken: users whose segment ended first (they must move), then the
uncertified ones, most likely to move first (largest ``upper * (1 - margin) / lower``).

    >>> from state.segments import SegmentModel
    >>> old = SegmentModel(1, np.array([[0.0, 0.0], [4.0, 0.0]], np.float32), np.array([0, 1]), 0.0)
    >>> b = LabelBounds()
    >>> b.set_exact(np.array([0, 1, 2]), np.array([0.5, 1.9, 0.1]), np.array([3.6, 2.1, 3.9]))
    >>> new = SegmentModel(2, np.array([[0.0, 0.0], [3.0, 0.0]], np.float32), np.array([0, 1]), 0.0)
    >>> b.on_publish(old, new, np.array([0, 0, 2]), margin=0.05).tolist()   # row 2's segment ended
    [2, 1]
"""

from __future__ import annotations

import numpy as np

from state.row_queue import RowQueue
from state.segments import SegmentModel, squared_distances

__all__ = ["LabelBounds", "LabelFollower", "LABELS_SETTLED"]

#: share of labelled users certified by the model above which held segment sizes are taken at their word
LABELS_SETTLED = 0.97


class LabelBounds:
    def __init__(self) -> None:
        self.upper = np.zeros(0, dtype=np.float32)
        self.lower = np.zeros(0, dtype=np.float32)

    def _grow(self, n: int) -> None:
        if n > len(self.upper):
            size = max(n, 2 * len(self.upper))
            for name, fill in (("upper", np.inf), ("lower", -np.inf)):
                grown = np.full(size, fill, dtype=np.float32)
                old = getattr(self, name)
                grown[: len(old)] = old
                setattr(self, name, grown)

    def set_exact(self, rows: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        """Bounds measured at assignment: distance to the held centroid and to the nearest other one."""
        if len(rows) == 0:
            return
        self._grow(int(rows.max()) + 1)
        self.upper[rows] = upper
        self.lower[rows] = lower

    def known(self, rows: np.ndarray) -> np.ndarray:
        """Whether both bounds of each row are known (False: never set, forgotten, or left to the next version)."""
        out = np.zeros(len(rows), dtype=bool)
        inside = rows < len(self.upper)
        out[inside] = np.isfinite(self.upper[rows[inside]]) & (self.lower[rows[inside]] > -np.inf)
        return out

    def forget(self, rows: np.ndarray) -> None:
        """Nothing known of these rows (handed to other users): re-checked at the next version."""
        rows = rows[rows >= 0]
        if len(rows):
            self._grow(int(rows.max()) + 1)
            self.upper[rows], self.lower[rows] = np.inf, -np.inf

    def state(self) -> np.ndarray:
        """[2, rows] float32: the bounds, for checkpoints (:meth:`load` is the inverse)."""
        return np.stack([self.upper, self.lower])

    def load(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float32)
        self.upper, self.lower = state[0].copy(), state[1].copy()

    def reset(self, distance: np.ndarray) -> None:
        """Forget the bounds (after a restore): ``upper`` from the stored distances, no ``lower`` beyond
        what the next version's centroid gaps give."""
        self.upper = np.where(np.isfinite(distance), distance, np.inf).astype(np.float32)
        self.lower = np.full(len(distance), -np.inf, dtype=np.float32)

    def on_publish(self, previous: SegmentModel, model: SegmentModel, segment: np.ndarray,
                   margin: float, ordered: int = 0) -> np.ndarray:
        """Move the bounds to ``model``; rows to re-assign (``segment``: held segment per row, -1: none).
        ``ordered`` > 0: only that many of the uncertified are sorted by urgency, the others follow in row
        order (a full sort of a million rows at every version costs more than the re-assignment it orders)."""
        n = len(segment)
        self._grow(n)
        upper, lower = self.upper[:n], self.lower[:n]  # views: updated in place
        held = segment >= 0
        ix = model.index_of(segment.astype(np.int64))
        ended = held & (ix < 0)
        # how far each centroid moved since the previous version (new ids: unknown)
        prev_ix = previous.index_of(model.segment_ids)
        known = prev_ix >= 0
        moved = np.zeros(model.k, dtype=np.float32)
        moved[known] = np.sqrt(squared_distances(model.centroids[known], previous.centroids[prev_ix[known]]).diagonal()
                               if known.any() else np.zeros(0, np.float32))
        cc = np.sqrt(squared_distances(model.centroids, model.centroids))
        np.fill_diagonal(cc, np.inf)
        gap = cc.min(axis=1) if model.k > 1 else np.full(model.k, np.inf, np.float32)
        newest = cc[:, ~known].min(axis=1) if (~known).any() else np.full(model.k, np.inf, np.float32)
        live = held & ~ended
        j = ix[live]
        u = upper[live] + moved[j]
        lo = lower[live] - (moved.max() if model.k else 0.0)
        lo = np.minimum(lo, newest[j] - u)  # a centroid born in this version may be close
        lo = np.maximum(lo, gap[j] - u)
        upper[live], lower[live] = u, lo
        rows = np.flatnonzero(live)
        need = lo < u * (1.0 - margin)
        cand, u, lo = rows[need], u[need], lo[need]
        urgency = (u * (1.0 - margin) - lo) / np.maximum(u, 1e-12)
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

    def __init__(self) -> None:
        self.bounds = LabelBounds()
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

    def restart(self, distance: np.ndarray, model: SegmentModel | None) -> None:
        """After a restore: bounds from the stored distances, following the restored model."""
        self.bounds.reset(distance)
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
