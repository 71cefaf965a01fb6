"""What the output contract needs of a user after the user's state is gone: the contract tail.

The ``user-segments`` contract promises that a user's ``seq`` grows by exactly
one per change and that ``previous_segment`` is the last published segment,
for as long as the user lives, including after ``--max-users`` evicted the
user's behavioural state (the least recently active go first). So eviction
keeps, per evicted user, only ``seq``, the segment and the last change id (and
the partition the user's events come from, so that the tail leaves with its
partition on a rebalance): a few dozen bytes instead of a state row. A user
who comes back starts a fresh state row that carries the tail on.

:class:`ContractTails` also holds, per store row, the id of the row's last
change (16 bytes; all zero: none yet), which the state changelog writes next
to the row.

    >>> import numpy as np
    >>> t = ContractTails()
    >>> t.set_change_ids(np.array([3]), ["00" * 15 + "2a"])
    >>> ids = t.change_ids(np.array([3, 0]))
    >>> int(ids[0][-1]), bytes(ids[1])
    (42, b'')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["ContractTails", "Tail"]

#: (seq, segment, last change id (16 bytes), source partition)
Tail = tuple[int, int, bytes, int]


class ContractTails:
    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity  # store rows there can ever be (0: unknown): the change ids grow no further
        self.evicted: dict[str, Tail] = {}  # evicted users of owned partitions -> their contract tail
        self._cid = np.zeros(0, dtype="S16")  # per store row: the last change's id
        self._new: list[str] = []  # evicted since the last drain_new (their tails are not written yet)

    # ----- per-row last change id ------------------------------------------
    def _grow(self, top: int) -> None:
        if top > len(self._cid):
            size = max(top, 2 * len(self._cid), 1024)
            if self.capacity:
                size = max(top, min(size, self.capacity))
            grown = np.zeros(size, dtype="S16")
            grown[: len(self._cid)] = self._cid
            self._cid = grown

    def row_nbytes(self) -> int:
        """Bytes of the per-row change ids (the evicted users' tails come on top)."""
        return self._cid.nbytes

    def set_change_ids(self, rows: np.ndarray, ids: Sequence[str]) -> None:
        """Record each row's newest change id (hex, as published)."""
        if len(rows):
            self._grow(int(rows.max()) + 1)
            self._cid[rows] = [bytes.fromhex(i) for i in ids]

    def set_raw_change_ids(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """As :meth:`set_change_ids`, from 16-byte ids (``S16``, as the changelog stores them)."""
        if len(rows):
            self._grow(int(rows.max()) + 1)
            self._cid[rows] = ids

    def change_ids(self, rows: np.ndarray) -> np.ndarray:
        """The rows' last change ids (``S16``; empty: none)."""
        self._grow(int(rows.max()) + 1 if len(rows) else 0)
        return self._cid[rows]

    def clear_rows(self, rows: np.ndarray) -> None:
        """Rows freed (eviction, erasure, a dropped partition): a later occupant starts without an id."""
        if len(rows) and len(self._cid):
            rows = rows[rows < len(self._cid)]
            self._cid[rows] = b""

    # ----- evicted users ------------------------------------------------------
    def capture(self, ids: Sequence[str], seq: np.ndarray, segment: np.ndarray, rows: np.ndarray,
                partition: np.ndarray) -> None:
        """Keep the contract tail of users evicted from ``rows`` (called before the rows are cleared)."""
        cids = self.change_ids(rows)
        self.evicted.update(zip(ids, zip(seq.tolist(), segment.tolist(), cids.tolist(), partition.tolist())))
        self._new.extend(ids)
        self.clear_rows(rows)

    def drain_new(self) -> list[tuple[str, Tail]]:
        """Users evicted since the last call and still evicted, with their tails (what a checkpoint writes)."""
        new, self._new = self._new, []
        ev = self.evicted
        return [(u, ev[u]) for u in dict.fromkeys(new) if u in ev]

    def write_again(self, ids: Iterable[str]) -> None:
        """Have the next :meth:`drain_new` give these evicted users' tails again."""
        self._new.extend(ids)

    def take(self, ids: Iterable[str]) -> dict[str, Tail]:
        """Remove and return the tails of these users (those who come back)."""
        pop = self.evicted.pop
        out = {}
        for uid in ids:
            t = pop(uid, None)
            if t is not None:
                out[uid] = t
        return out

    def forget(self, user_id: str) -> None:
        """Erasure: nothing of the user stays."""
        self.evicted.pop(user_id, None)

    def drop_partition(self, partition: int) -> int:
        """Tails of a partition this member no longer owns go with it; returns how many."""
        self._new = [u for u in self._new if self.evicted.get(u, (0, 0, b"", partition))[3] != partition]
        gone = [u for u, t in self.evicted.items() if t[3] == partition]
        for u in gone:
            del self.evicted[u]
        return len(gone)

    def to_columns(self) -> dict:
        """The evicted users' tails as columns (a local snapshot's shared state)."""
        ev = self.evicted
        seq, seg, cid, part = zip(*ev.values()) if ev else ((), (), (), ())
        return {"ids": list(ev), "seq": np.array(seq, dtype=np.int64), "segment": np.array(seg, dtype=np.int64),
                "cid": list(cid), "partition": np.array(part, dtype=np.int64)}

    def load_columns(self, cols: dict) -> None:
        self.evicted = dict(zip(cols["ids"], zip(np.asarray(cols["seq"]).tolist(), np.asarray(cols["segment"]).tolist(),
                                                 [bytes(c) for c in cols["cid"]], np.asarray(cols["partition"]).tolist())))

    def of_partition(self, partition: int) -> dict[str, Tail]:
        return {u: t for u, t in self.evicted.items() if t[3] == partition}
