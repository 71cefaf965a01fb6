"""What a checkpoint (a local snapshot, the state changelog) saves of a :class:`~state.user_store.UserStore`'s
users, and how they are loaded back: columns per user, each row's decay reference, the row layout.

A mixin: :class:`~state.user_store.UserStore` holds the columns and id maps these methods use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.user_keys import as_encoded_ids, raw_user_keys

__all__ = ["SavedRows", "COLUMNS"]

#: Every per-row column (what a checkpoint saves for each user).
COLUMNS = ("dense", "last_ts", "items", "item_w", "item_head", "segment", "seq", "distance", "partition")


def _any_in(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether any value of ``a`` is in ``b`` (sort and search: ``np.isin`` hashes, several times slower)."""
    if not len(a) or not len(b):
        return False
    s = np.sort(b)
    return bool((s[np.minimum(np.searchsorted(s, a), len(s) - 1)] == a).any())


class SavedRows:
    """Export and import of users' rows (:class:`~state.user_store.UserStore` methods)."""

    t0: float | None
    capacity: int
    dense: np.ndarray
    key: np.ndarray
    ref: np.ndarray
    imported_rows: np.ndarray
    _index: Any
    _ids: Any
    _free: list[int]
    _used: int

    def export_rows(self, rows: np.ndarray) -> dict:
        """The rows' users and columns, plus the decay reference each row is stored against (``ref``) and
        the store's shared one (``t0``)."""
        rows = np.asarray(rows, dtype=np.int64)
        block: dict = {"ids": self.user_ids(rows), "rows": rows, "t0": self.t0, "ref": self.ref[rows].copy()}
        for name in COLUMNS:
            block[name] = getattr(self, name)[rows].copy()
        return block

    def layout(self) -> dict:
        """Row bookkeeping: with it, a restore puts every user back on its own row (bit-exact replays)."""
        return {"used": self._used, "free": np.asarray(self._free, dtype=np.int64), "t0": self.t0}

    def import_rows(self, block: dict, *, keep_rows: bool = False) -> list[str]:
        """Add users saved by :meth:`export_rows`; returns the ids evicted to make room.

        ``block["ids"]``: the user ids, as ``str`` or already UTF-8 encoded (``bytes``, as the changelog
        keys them: a restore of a million users then decodes and re-encodes none).
        ``keep_rows`` puts each user back on its saved row when that row is free.
        Each row keeps the decay reference it was saved against (``ref``, or the block's ``t0``).
        ``block["key"]`` (optional): the users' :func:`user_keys`. The rows given are left in
        :attr:`imported_rows`.
        """
        raw = as_encoded_ids(list(block["ids"]))
        t0b = block["t0"]
        if not raw:
            self.imported_rows = np.zeros(0, dtype=np.int64)
            return []
        for name in COLUMNS:
            want = getattr(self, name).shape[1:]
            if np.shape(block[name])[1:] != want or len(block[name]) != len(raw):
                raise ValueError(f"saved column {name!r} has shape {np.shape(block[name])}, this store needs "
                                 f"({len(raw)}, {', '.join(map(str, want))}): another feature configuration?")
        ref = np.asarray(block["ref"], dtype=np.float64) if block.get("ref") is not None else \
            np.full(len(raw), -np.inf if t0b is None else t0b, dtype=np.float64)
        newest = float(ref.max()) if len(ref) and np.isfinite(ref.max()) else t0b
        if self.t0 is None:
            self.t0 = newest
        elif newest is not None and newest > self.t0:
            self._rebase(newest)
        saved_rows = np.asarray(block["rows"], dtype=np.int64)
        evicted: list[str] = []
        if keep_rows and len(saved_rows):
            top = int(saved_rows.max()) + 1
            if top > len(self.dense):
                self._alloc(min(self.capacity, max(top, 2 * len(self.dense))))
        n = len(raw)
        rows = np.empty(n, dtype=np.int64)
        missing: list[int] | np.ndarray = []
        # an empty index (a restore) holds none of them: no lookup, whose hashing costs a million ids; nor
        # does a store none of whose users has any of their keys (same id, same key), as when a restore
        # brings partition after partition
        held = np.full(n, -1, dtype=np.int64)
        keys = None if block.get("key") is None else np.asarray(block["key"], dtype=np.uint64)
        if len(self._index) and (keys is None or _any_in(keys, self.key[self.live_rows()])):
            held = self._index.get_many(raw)
        if not keep_rows and held.max() < 0:  # none held yet (a restore): all new rows
            missing = np.arange(n)
        back: list[bytes] = []  # users put back on their saved rows (their keys are still to set)
        back_rows: list[int] = []
        placed: list[int] = []  # their positions in ``ids``
        free = self._ids.free(len(self.dense)).tolist() if keep_rows and isinstance(missing, list) else None
        saved = saved_rows.tolist()
        for i, (uid, r) in enumerate(zip(raw, held.tolist()) if isinstance(missing, list) else ()):
            if r < 0 and free is not None and saved[i] < len(free) and free[saved[i]]:
                r = saved[i]
                free[r] = False
                back.append(uid)
                back_rows.append(r)
                placed.append(i)
            if r < 0:
                missing.append(i)
            else:
                rows[i] = r
        if back:
            self._ids.set_many(back_rows, back)
            self._used = max(self._used, max(back_rows) + 1)
            self._index.insert_many(back, back_rows)
        if len(missing):
            if keep_rows:
                taken = set(rows[np.setdiff1d(np.arange(n), missing)].tolist())
                self._free = [r for r in self._free if r not in taken]
            available = len(self._free) + (self.capacity - self._used)
            if available < len(missing):
                known = np.setdiff1d(np.arange(n), missing)
                evicted = self._evict(len(missing) - available, rows[known]).evicted_user_ids
            self._give_rows(rows, np.asarray(missing, dtype=np.int64), raw, keys)
        elif keep_rows:
            taken = set(rows.tolist())
            self._free = [r for r in self._free if r not in taken]
        # rows handed out in one run (a restore into fresh rows) take slice copies, not a scatter per column
        at: np.ndarray | slice = rows
        if n and int(rows[-1]) - int(rows[0]) == n - 1 and bool((np.diff(rows) == 1).all()):
            at = slice(int(rows[0]), int(rows[0]) + n)
        for name in COLUMNS:
            getattr(self, name)[at] = block[name]
        if placed:  # rows given by _give_rows have their keys, rows already held kept theirs
            self.key[rows[placed]] = raw_user_keys([raw[i] for i in placed])
        self.ref[at] = ref
        self.imported_rows = rows
        return evicted

    def set_layout(self, layout: dict) -> None:
        """Restore the free-row order saved by :meth:`layout` (after :meth:`import_rows` with ``keep_rows``)."""
        used = max(self._used, int(layout["used"]))
        if used > len(self.dense):
            self._alloc(min(self.capacity, used))
        self._used = used
        free = self._ids.free(used)
        saved = [r for r in np.asarray(layout["free"], dtype=np.int64).tolist() if r < used and free[r]]
        free[saved] = False
        holes = np.flatnonzero(free).tolist()
        self._free = holes + saved
