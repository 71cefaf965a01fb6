"""A first-in, first-out queue of state rows without duplicates, in numpy.

The pipeline queues users for re-assignment when their segment ends or is
split (possibly hundreds of thousands at once, at 1M users) and takes a bounded
number per micro-batch. A sorted set (``np.union1d`` per addition) re-sorted
the whole queue at every model version; here an addition costs the rows added
and a take the rows taken, and a membership mask keeps a row in the queue once.

    >>> q = RowQueue()
    >>> q.add(np.array([5, 2, 9])); q.add(np.array([2, 7]))
    >>> q.take(3).tolist(), len(q)
    ([5, 2, 9], 1)
    >>> q.add(np.array([5])); q.discard(np.array([7])); q.rows().tolist()
    [5]
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowQueue"]


class RowQueue:
    def __init__(self, rows: np.ndarray | None = None) -> None:
        self._rows = np.zeros(0, dtype=np.int64)
        self._queued = np.zeros(0, dtype=bool)
        if rows is not None:
            self.add(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._rows)

    @classmethod
    def of_distinct(cls, rows: np.ndarray) -> RowQueue:
        """A queue of ``rows`` in that order, known to hold no row twice (no de-duplication pass: at a
        million rows the sort it needs costs more than building the queue).

        >>> RowQueue.of_distinct(np.array([4, 1, 7])).take(2).tolist()
        [4, 1]
        """
        q = cls()
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            q._queued = np.zeros(int(rows.max()) + 1, dtype=bool)
            q._queued[rows] = True
        q._rows = rows
        return q

    def count(self, mask: np.ndarray) -> int:
        """How many queued rows ``mask`` (indexed by row) marks, without copying the queue."""
        return int(np.count_nonzero(mask[self._rows]))

    def rows(self) -> np.ndarray:
        """The queued rows, oldest first (a copy: checkpoints keep it)."""
        return self._rows.copy()

    def add(self, rows: np.ndarray) -> None:
        """Queue rows not queued yet, in the order given (a row repeated in ``rows`` is queued once)."""
        if len(rows) == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        top = int(rows.max()) + 1
        if top > len(self._queued):
            grown = np.zeros(max(top, 2 * len(self._queued)), dtype=bool)
            grown[: len(self._queued)] = self._queued
            self._queued = grown
        rows = rows[~self._queued[rows]]
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)]
        self._queued[rows] = True
        self._rows = np.concatenate([self._rows, rows])

    def take(self, n: int) -> np.ndarray:
        """The ``n`` oldest rows, removed from the queue."""
        out, self._rows = self._rows[:n], self._rows[n:]
        self._queued[out] = False
        return out

    def keep(self, mask: np.ndarray) -> None:
        """Drop the queued rows where ``mask`` (aligned with :meth:`rows`) is false."""
        self._queued[self._rows[~mask]] = False
        self._rows = self._rows[mask]

    def discard(self, rows: np.ndarray) -> None:
        """Drop these rows from the queue wherever they are."""
        if len(self._rows) and len(rows):
            self.keep(~np.isin(self._rows, rows))
