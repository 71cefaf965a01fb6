"""Row -> user id (UTF-8 bytes), in one fixed-width numpy column instead of a list of ``bytes``.

A list of ``bytes`` costs 8 bytes of pointer plus a 33-byte object header per
id: 55 bytes a user for a 14-byte id, the largest part of a user's footprint
after its decayed sums. :class:`IdColumn` stores each id inline in a
``numpy`` ``S<width>`` column (``width`` the longest inline id so far, grown
when a longer one comes, up to :data:`INLINE_MAX`): 14 bytes for that id.

Ids a NUL-padded column cannot hold exactly live in a dict beside it, keyed
by row: longer than :data:`INLINE_MAX` (one such id would otherwise widen
every row), empty, or ending in ``b"\\x00"`` (numpy strips trailing NULs). Their
inline slot is empty, so a row is free when its slot is empty and the dict
does not hold it.

    >>> ids = IdColumn(4)
    >>> ids.set_many([2, 0, 3], [b"alice", b"", b"x" * 100])
    >>> ids[2], ids[0], ids[1], len(ids[3]), ids.width
    (b'alice', b'', None, 100, 5)
    >>> ids.take([3, 2])[1], ids.equal(np.array([2, 2, 0]), [b"alice", b"alic", b""]).tolist()
    (b'alice', [True, False, True])
    >>> ids.clear_many([2]); ids.free(4).tolist()
    [False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["IdColumn", "INLINE_MAX"]

#: Longest id kept inline (bytes): pseudonyms (32 hex digits), UUIDs (36) and most e-mail addresses fit.
INLINE_MAX = 64


def _lengths(uids: Sequence[bytes]) -> np.ndarray:
    return np.fromiter(map(len, uids), dtype=np.int64, count=len(uids))


def _laid_out(uids: Sequence[bytes], lens: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids as an ``S<width>`` array (longer ones cut, which the caller masks by length) and which of them
    cannot be inline at all (see the module doc): empty, longer than :data:`INLINE_MAX`, or ending in NUL."""
    n = len(uids)
    laid = np.array(uids, dtype=f"S{width}")
    special = (lens == 0) | (lens > INLINE_MAX)
    at = np.flatnonzero((lens > 0) & (lens <= width))
    last = laid.view(np.uint8).reshape(n, width)[at, lens[at] - 1]
    special[at[last == 0]] = True
    return laid, special


class IdColumn:
    """Fixed-width column of ids, one per row (``None``: a free row)."""

    def __init__(self, rows: int = 0) -> None:
        self.width = 1
        self._inline = np.zeros(rows, dtype="S1")
        self._outside: dict[int, bytes] = {}  # row -> id that cannot be inline

    def __len__(self) -> int:
        return len(self._inline)

    def grow(self, rows: int) -> None:
        """Room for ``rows`` rows (the new ones free)."""
        if rows > len(self._inline):
            new = np.zeros(rows, dtype=self._inline.dtype)
            new[: len(self._inline)] = self._inline
            self._inline = new

    def nbytes(self) -> int:
        """The column, plus the ids held outside it (objects and an estimated 100 bytes of dict entry each)."""
        return self._inline.nbytes + sum(33 + len(v) + 100 for v in self._outside.values())

    # ----- reading -----------------------------------------------------------
    def __getitem__(self, row: int) -> bytes | None:
        v = self._inline[row]
        if v:
            return bytes(v)
        return self._outside.get(int(row))

    def take(self, rows: Iterable[int] | np.ndarray) -> list[bytes | None]:
        """Ids of these rows, as ``bytes`` (``None``: a free row)."""
        rows = np.asarray(rows, dtype=np.int64)
        got = self._inline[rows]
        vals: list[bytes | None] = got.tolist()
        empty = np.flatnonzero(got == b"").tolist()
        out = self._outside
        for i in empty:  # free rows, and ids held outside the column
            vals[i] = out.get(int(rows[i]))
        return vals

    def equal(self, rows: np.ndarray, uids: Sequence[bytes]) -> np.ndarray:
        """Whether row ``rows[i]`` holds ``uids[i]``, for every ``i`` at once."""
        if not len(uids):
            return np.zeros(0, dtype=bool)
        lens = _lengths(uids)
        laid, special = _laid_out(uids, lens, self.width)
        # an id longer than the column was cut by the layout; a special one compares only outside
        same = (self._inline[rows] == laid) & (lens <= self.width) & ~special
        if self._outside:
            out = self._outside
            for i in np.flatnonzero(special).tolist():
                same[i] = out.get(int(rows[i])) == uids[i]
        return same

    def free(self, n: int) -> np.ndarray:
        """Whether each of rows ``0..n-1`` is free."""
        empty = self._inline[:n] == b""
        for r in self._outside:
            if r < n:
                empty[r] = False
        return empty

    # ----- writing ---------------------------------------------------------------
    def set_many(self, rows: Sequence[int] | np.ndarray, uids: Sequence[bytes]) -> None:
        """Write ``uids[i]`` at row ``rows[i]``."""
        if not len(uids):
            return
        rows = np.asarray(rows, dtype=np.int64)
        lens = _lengths(uids)
        fit = lens[lens <= INLINE_MAX]
        if len(fit) and int(fit.max()) > self.width:
            self.width = int(fit.max())
            self._inline = self._inline.astype(f"S{self.width}")
        laid, special = _laid_out(uids, lens, self.width)
        if self._outside:
            for r in rows.tolist():
                self._outside.pop(r, None)
        if special.any():
            for i in np.flatnonzero(special).tolist():
                self._outside[int(rows[i])] = uids[i]
            laid[special] = b""
        self._inline[rows] = laid

    def __setitem__(self, row: int, uid: bytes | None) -> None:
        if uid is None:
            self.clear_many([row])
        else:
            self.set_many([row], [uid])

    def clear_many(self, rows: Sequence[int] | np.ndarray) -> None:
        """Free these rows."""
        rows = np.asarray(rows, dtype=np.int64)
        self._inline[rows] = b""
        if self._outside:
            for r in rows.tolist():
                self._outside.pop(r, None)
