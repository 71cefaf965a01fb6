"""User id -> store row, in one numpy array instead of a dict.

A ``dict[str, int]`` costs about 74 bytes a user at a million users (the
dict's entry and index slots, and an ``int`` object per row), a fifth of what
the whole per-user state costs. :class:`IdIndex` is an open-addressing hash
table (linear probing) whose slots hold only the row (``int32``, 4 bytes; two
slots a user after a rebuild, a rebuild once 70% are taken: 6-12 bytes a
user); the ids themselves stay where
the store keeps them anyway, its row -> id column (:class:`state.id_column.IdColumn`,
or any list), and a probe confirms a hit by comparing that id (a whole probe round
at once where the column can: :meth:`IdColumn.equal`). Lookups and inserts of a batch's users are vectorised over
the batch; the hash is Python's ``hash`` of the id (salted per process, which is
fine: the table is never saved, a restore rebuilds it from the ids).

    >>> ids = [None] * 4
    >>> index = IdIndex(ids)
    >>> ids[2], ids[0] = "alice", "bob"
    >>> index.insert_many(["alice", "bob"], [2, 0])
    >>> index.get_many(["bob", "carol", "alice"]).tolist(), len(index)
    ([0, -1, 2], 2)
    >>> index.delete_many(["alice"]); index.get("alice") is None, sorted(index)
    (True, ['bob'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["IdIndex"]

_EMPTY, _DELETED = -1, -2
_MAX_LOAD = 0.7  # slots held or deleted, at most, before a rebuild to twice the ids held


def _same(ids: Sequence[bytes | str | None], rows: np.ndarray, uids: Sequence[bytes | str]) -> np.ndarray:
    """Whether ``ids[rows[i]] == uids[i]`` for every ``i``."""
    equal = getattr(ids, "equal", None)
    if equal is not None:
        return equal(rows, uids)
    return np.fromiter((ids[a] == b for a, b in zip(rows.tolist(), uids)), dtype=bool, count=len(rows))


def _take(ids: Sequence[bytes | str | None], rows: list[int]) -> list:
    take = getattr(ids, "take", None)
    return take(rows) if take is not None else [ids[r] for r in rows]


def _start(uids: Sequence[str], size: int) -> np.ndarray:
    """Each id's first slot."""
    h = np.fromiter(map(hash, uids), dtype=np.int64, count=len(uids)).view(np.uint64)
    return (h % np.uint64(size)).astype(np.int64)


class IdIndex:
    """``id -> row`` over ``ids`` (the store's row -> id list, read to confirm each hit; the store writes
    ``ids[row]`` before inserting and deletes before clearing it)."""

    def __init__(self, ids: Sequence[str | None], slots: int = 1024) -> None:
        self._ids = ids
        self._slots = np.full(max(8, slots), _EMPTY, dtype=np.int32)
        self._live = 0  # ids held
        self._filled = 0  # slots not empty (held or deleted): what probing walks over

    def __len__(self) -> int:
        return self._live

    def __contains__(self, uid: str) -> bool:
        return self.get(uid) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(_take(self._ids, self.values()))

    def values(self) -> list[int]:
        """The rows held, in slot order."""
        s = self._slots
        return s[s >= 0].tolist()

    def nbytes(self) -> int:
        return self._slots.nbytes

    # ----- lookups -----------------------------------------------------------
    def _find(self, uids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slot, row) of each id; -1, -1 where it is not held."""
        n = len(uids)
        slots, ids = self._slots, self._ids
        size = len(slots)
        pos = _start(uids, size)
        found_at = np.full(n, -1, dtype=np.int64)
        rows = np.full(n, -1, dtype=np.int64)
        todo = np.arange(n)
        while len(todo):
            p = pos[todo]
            r = slots[p]
            held = r >= 0
            cand, crow = todo[held], r[held]
            same = _same(ids, crow, [uids[b] for b in cand.tolist()])
            found_at[cand[same]], rows[cand[same]] = p[held][same], crow[same]
            go_on = r == _DELETED
            go_on[np.flatnonzero(held)[~same]] = True
            todo = todo[go_on]
            pos[todo] = (pos[todo] + 1) % size
        return found_at, rows

    def get_many(self, uids: Sequence[str]) -> np.ndarray:
        """Row of each id (int64), -1 where it is not held."""
        return self._find(uids)[1]

    def get(self, uid: str) -> int | None:
        """Row of one id (None: not held); a plain loop, no arrays (one lookup at a time is common)."""
        slots, ids = self._slots, self._ids
        size = len(slots)
        pos = (hash(uid) & 0xFFFFFFFFFFFFFFFF) % size  # as _start: the hash taken as unsigned 64 bits
        while True:
            r = int(slots[pos])
            if r == _EMPTY:
                return None
            if r >= 0 and ids[r] == uid:
                return r
            pos = pos + 1 if pos + 1 < size else 0

    # ----- changes ---------------------------------------------------------------
    def insert_many(self, uids: Sequence[str], rows: Sequence[int] | np.ndarray) -> None:
        """Add ids not held yet (distinct), each at its row (whose id the store has already written)."""
        n = len(uids)
        if not n:
            return
        if self._filled + n > _MAX_LOAD * len(self._slots):
            self._rebuild(self._live + n)
        slots = self._slots
        size = len(slots)
        pos = _start(uids, size)
        rows = np.asarray(rows, dtype=np.int32)
        todo = np.arange(n)
        while len(todo):
            p = pos[todo]
            free = slots[p] < 0
            # of several ids probing the same free slot this round, the first takes it
            _, first = np.unique(p[free], return_index=True)
            take = np.flatnonzero(free)[first]
            self._filled += int((slots[p[take]] == _EMPTY).sum())
            slots[p[take]] = rows[todo[take]]
            left = np.ones(len(todo), dtype=bool)
            left[take] = False
            todo = todo[left]
            pos[todo] = (pos[todo] + 1) % size
        self._live += n

    def __setitem__(self, uid: str, row: int) -> None:
        self.insert_many([uid], [row])

    def delete_many(self, uids: Sequence[str]) -> None:
        """Forget ids (held ones; others are ignored), before the store clears their rows' ids."""
        at, _ = self._find(uids)
        at = at[at >= 0]
        self._slots[at] = _DELETED
        self._live -= len(at)

    def pop(self, uid: str, default: int | None = None) -> int | None:
        at, rows = self._find([uid])
        if at[0] < 0:
            return default
        self._slots[at[0]] = _DELETED
        self._live -= 1
        return int(rows[0])

    def _rebuild(self, live: int) -> None:
        """A table of two slots per id for ``live`` ids, without the deleted slots."""
        held = self._slots[self._slots >= 0]
        self._slots = np.full(max(1024, 2 * live), _EMPTY, dtype=np.int32)
        self._live = self._filled = 0
        self.insert_many(_take(self._ids, held.tolist()), held)
