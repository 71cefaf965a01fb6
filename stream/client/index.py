"""The rules of the ``user-segments`` contract, applied to records in offset order: who is in which segment now.

Pure (no Kafka): :class:`SegmentIndex` takes ``(key, value, partition,
offset)`` and keeps, per user, the record that holds. The rules, from
:mod:`stream.contracts.user_segments`:

- the key is the user; the last value per key wins, in offset order;
- a tombstone (value None) removes the user (an erasure);
- ``seq`` counts a user's changes (+1 each): a record whose ``seq`` is not
  greater than the one held is stale and ignored. One whose ``change_id`` was
  already applied (it is the held one, or among the last ``duplicate_window``
  applied) is an exact re-send, as after a producer crash: counted as a
  duplicate. Any other is counted as out of order (stale);
- after a tombstone the user starts again (a returning user's ``seq``
  restarts at 1);
- a record that breaks the contract (no key, not msgpack, a missing field, a
  key that is not its ``user_id``) is counted and skipped.

"What changed since my last look" is asked with a cursor: partition -> next
offset, as :attr:`SegmentIndex.cursor` gives it. Offsets are the topic's, so a
cursor kept by a recommender still means the same after a restart of the
table (as long as compaction has not removed the tombstones in between).

    >>> import msgpack
    >>> def rec(user, segment, seq, cid):
    ...     return msgpack.packb({"schema": 1, "user_id": user, "segment": segment, "previous_segment": None,
    ...         "event_time": 1.0, "emitted_at": 2.0, "model_version": 1, "distance": 0.5, "seq": seq,
    ...         "change_id": cid})
    >>> ix = SegmentIndex()
    >>> [ix.apply(b"u1", rec("u1", 3, 1, "a"), 0, 0), ix.apply(b"u1", rec("u1", 5, 2, "b"), 0, 1)]
    ['applied', 'applied']
    >>> mark = ix.cursor
    >>> [ix.apply(b"u1", rec("u1", 3, 1, "a"), 0, 2), ix.apply(b"u2", rec("u2", 1, 1, "c"), 0, 3)]
    ['duplicate', 'applied']
    >>> ix.get("u1").segment, len(ix), ix.sizes()
    (5, 2, {1: 1, 5: 1})
    >>> [i.user_id for i in ix.changes_since(mark).updated]
    ['u2']
    >>> ix.apply(b"u1", None, 0, 4), ix.get("u1"), len(ix), ix.changes_since(mark).removed
    ('removed', None, 1, ['u1'])
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from stream.contracts.user_segments import ContractError, decode_segment_event

__all__ = ["SegmentInfo", "Changes", "TableStats", "SegmentIndex", "Outcome"]

log = logging.getLogger(__name__)


class Outcome:
    """What :meth:`SegmentIndex.apply` did with a record (plain strings, so they print and compare simply)."""

    APPLIED = "applied"
    REMOVED = "removed"
    DUPLICATE = "duplicate"
    STALE = "stale"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A user's current segment, as the last applied ``user-segments`` record says."""

    user_id: str
    segment: int
    previous_segment: int | None
    seq: int
    model_version: int
    event_time: float
    emitted_at: float
    distance: float
    change_id: str | None
    partition: int  #: where the record is: a change's place in the topic
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Removed:
    user_id: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Changes:
    """Users whose segment changed, and users erased, after a cursor; ``cursor`` is the one to ask with next."""

    updated: list[SegmentInfo]
    removed: list[str]
    cursor: dict[int, int]


@dataclass
class TableStats:
    """Counts of records by outcome; ``seq_gaps``: applied records whose ``seq`` skipped numbers.

    A gap is expected on a compacted topic (compaction removed the records in
    between) and after starting late; while following, it means changes went
    missing upstream.
    """

    records: int = 0
    applied: int = 0
    removed: int = 0
    duplicates: int = 0
    stale: int = 0
    invalid: int = 0
    seq_gaps: int = 0


class SegmentIndex:
    """Users -> :class:`SegmentInfo` under the contract's rules (see the module docstring). Not thread-safe."""

    def __init__(self, duplicate_window: int = 100_000) -> None:
        # user -> the entry of its last applied record (SegmentInfo or _Removed), oldest first: an entry moves to
        # the end when its user changes, so changes_since walks back from the end and stops early.
        self._entries: OrderedDict[str, SegmentInfo | _Removed] = OrderedDict()
        self._held = 0
        self._sizes: Counter[int] = Counter()
        self._window = max(0, duplicate_window)
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._positions: dict[int, int] = {}
        self.stats = TableStats()

    # -- applying records -------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> str:
        """Apply one record (records of a partition in offset order); returns its :class:`Outcome`."""
        self._positions[partition] = max(self._positions.get(partition, 0), offset + 1)
        outcome = self._apply(key, value, partition, offset)
        self.stats.records += 1
        if outcome == Outcome.APPLIED:
            self.stats.applied += 1
        elif outcome == Outcome.REMOVED:
            self.stats.removed += 1
        elif outcome == Outcome.DUPLICATE:
            self.stats.duplicates += 1
        elif outcome == Outcome.STALE:
            self.stats.stale += 1
        else:
            self.stats.invalid += 1
        return outcome

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> str:
        if key is None:
            return self._invalid("a record without a key", partition, offset)
        try:
            user = key.decode("utf-8")
        except UnicodeDecodeError:
            return self._invalid("a key that is not UTF-8", partition, offset)
        held = self._entries.get(user)
        if value is None:
            if isinstance(held, SegmentInfo):
                self._sizes[held.segment] -= 1
                if not self._sizes[held.segment]:
                    del self._sizes[held.segment]
                self._held -= 1
            self._put(user, _Removed(user, partition, offset))
            return Outcome.REMOVED
        try:
            msg = decode_segment_event(value)
        except ContractError as exc:
            return self._invalid(str(exc), partition, offset)
        if msg["user_id"] != user:
            return self._invalid(f"key {user!r} but user_id {msg['user_id']!r}", partition, offset)
        cid = msg.get("change_id")
        if isinstance(held, SegmentInfo) and msg["seq"] <= held.seq:
            if cid is not None and (cid == held.change_id or cid in self._recent_set):
                return Outcome.DUPLICATE
            if cid is None and msg["seq"] == held.seq and msg["segment"] == held.segment:
                return Outcome.DUPLICATE  # an old producer without change ids: same seq, same segment
            return Outcome.STALE
        info = SegmentInfo(user, msg["segment"], msg["previous_segment"], msg["seq"], msg["model_version"],
                           msg["event_time"], msg["emitted_at"], msg["distance"], cid, partition, offset)
        if isinstance(held, SegmentInfo):
            if msg["seq"] > held.seq + 1:
                self.stats.seq_gaps += 1
            self._sizes[held.segment] -= 1
            if not self._sizes[held.segment]:
                del self._sizes[held.segment]
        else:
            self._held += 1
        self._sizes[info.segment] += 1
        self._put(user, info)
        if cid is not None and self._window:
            self._remember(cid)
        return Outcome.APPLIED

    def _put(self, user: str, entry: SegmentInfo | _Removed) -> None:
        self._entries[user] = entry
        self._entries.move_to_end(user)

    def _remember(self, cid: str) -> None:
        self._recent.append(cid)
        self._recent_set.add(cid)
        if len(self._recent) > self._window:
            self._recent_set.discard(self._recent.popleft())

    def _invalid(self, why: str, partition: int, offset: int) -> str:
        if self.stats.invalid == 0 or (self.stats.invalid + 1) % 1000 == 0:
            log.warning("user-segments: skipped a record that breaks the contract (%d so far): %s",
                        self.stats.invalid + 1, why, extra={"partition": partition, "offset": offset})
        return Outcome.INVALID

    # -- reading ------------------------------------------------------------
    def get(self, user_id: str) -> SegmentInfo | None:
        entry = self._entries.get(user_id)
        return entry if isinstance(entry, SegmentInfo) else None

    def __len__(self) -> int:
        return self._held

    def __contains__(self, user_id: object) -> bool:
        return isinstance(self._entries.get(user_id), SegmentInfo)  # type: ignore[arg-type]

    def sizes(self) -> dict[int, int]:
        """Segment -> users in it, by segment id."""
        return dict(sorted(self._sizes.items()))

    def users(self) -> list[SegmentInfo]:
        """Every held user, least recently changed first."""
        return [e for e in self._entries.values() if isinstance(e, SegmentInfo)]

    @property
    def cursor(self) -> dict[int, int]:
        """Partition -> next offset: everything before it has been applied."""
        return dict(self._positions)

    def changes_since(self, cursor: Mapping[int, int] | None = None) -> Changes:
        """Users whose last applied record is at or after ``cursor`` (partition -> offset; missing: 0).

        Each user appears once, with its current :class:`SegmentInfo` (``updated``,
        in the order they changed) or its id (``removed``). Costs time in
        proportion to the changes returned, not to the users held.
        """
        cursor = cursor or {}
        open_parts = set(self._positions)
        updated: list[SegmentInfo] = []
        removed: list[str] = []
        for entry in reversed(self._entries.values()):
            if not open_parts:
                break
            if entry.offset < cursor.get(entry.partition, 0):
                # entries of one partition sit in offset order: the rest of this partition is older
                open_parts.discard(entry.partition)
                continue
            if entry.partition not in open_parts:
                continue
            if isinstance(entry, SegmentInfo):
                updated.append(entry)
            else:
                removed.append(entry.user_id)
        updated.reverse()
        removed.reverse()
        return Changes(updated, removed, self.cursor)
