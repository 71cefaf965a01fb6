"""Input contract v1: decode and validate behaviour events into a columnar batch.

A record value is a msgpack map (the rules themselves, written once:
:data:`state.event_contract.FIELDS`)::

    user_id     str | int   required, 1..256 chars
    action      str         required (view, click, add_to_cart, purchase, rate, ...;
                            unknown actions count under "other")
    ts          int | float required, event time in epoch seconds
    item_id     str | int   optional
    categories  [str]       optional, at most 64 entries
    value       float       optional (rating, price, dwell seconds)
    event_id    str | int   optional (lets the consumer drop re-delivered events)

Extra fields are ignored. Anything else is *rejected* with one of
:data:`REASONS`, never raised:

    >>> import msgpack
    >>> from state.features import FeatureSpec
    >>> dec = EventDecoder(FeatureSpec(), now=lambda: 2e9)
    >>> good = msgpack.packb({"user_id": 7, "action": "view", "ts": 1.7e9, "categories": ["a"]})
    >>> bad = msgpack.packb({"user_id": 7, "action": "view", "ts": float("nan")})
    >>> batch, rejected = dec.decode_records([good, b"\\xc1", bad])
    >>> batch.user_ids, batch.source_index.tolist()
    (['7'], [0])
    >>> [(r.index, r.reason) for r in rejected]
    [(1, 'undecodable'), (2, 'non_finite')]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from state.event_contract import DELETE_ACTION
from state.fastdecode import validate_columns
from state.features import FeatureSpec

__all__ = ["EventBatch", "EventDecoder", "Rejected", "REASONS", "DELETE_ACTION", "set_gc_threshold"]

#: Every reason a record can be rejected for (a bounded label set for metrics).
REASONS: tuple[str, ...] = (
    "oversized",
    "null_value",
    "undecodable",
    "not_a_map",
    "missing_field",
    "bad_type",
    "bad_value",
    "non_finite",
    "ts_out_of_range",
)


@dataclass(frozen=True)
class Rejected:
    """A record that broke the contract: its position in the input, why, and its original bytes."""

    index: int
    reason: str
    detail: str
    raw: bytes | None


@dataclass
class EventBatch:
    """Valid events of one micro-batch, column by column (row i = i-th valid event)."""

    user_ids: list[str]
    actions: np.ndarray  # int16, index into FeatureSpec actions (+ other)
    ts: np.ndarray  # float64 event time, epoch seconds
    item_tokens: np.ndarray  # int64, -1 when the event names no item
    values: np.ndarray  # float32, NaN when the event carries no value
    cat_event: np.ndarray  # int32, event row of each category occurrence
    cat_bucket: np.ndarray  # int32, category column of each occurrence
    source_index: np.ndarray  # int64, position of each event in the decoded input
    event_ids: list[str | None] = field(default_factory=list)
    deletes: list[tuple[int, str]] = field(default_factory=list)  # (source index, user id) of delete events
    item_names: dict[int, str | int] = field(default_factory=dict)  # items first seen by the decoder: token -> id

    def __len__(self) -> int:
        return len(self.user_ids)

    def select(self, keep: np.ndarray) -> EventBatch:
        """The events where ``keep`` is True (category occurrences follow their events)."""
        idx = np.flatnonzero(keep)
        new_row = np.full(len(self), -1, dtype=np.int64)
        new_row[idx] = np.arange(len(idx))
        cat_keep = keep[self.cat_event] if len(self.cat_event) else np.zeros(0, dtype=bool)
        pick = idx.tolist()
        return EventBatch(
            user_ids=[self.user_ids[i] for i in pick],
            actions=self.actions[idx], ts=self.ts[idx], item_tokens=self.item_tokens[idx], values=self.values[idx],
            cat_event=new_row[self.cat_event[cat_keep]].astype(np.int32), cat_bucket=self.cat_bucket[cat_keep],
            source_index=self.source_index[idx],
            event_ids=[self.event_ids[i] for i in pick] if self.event_ids else [],
            deletes=self.deletes, item_names=self.item_names,
        )

    @classmethod
    def empty(cls) -> EventBatch:
        return cls(user_ids=[], actions=np.zeros(0, np.int16), ts=np.zeros(0), item_tokens=np.zeros(0, np.int64),
                   values=np.zeros(0, np.float32), cat_event=np.zeros(0, np.int32), cat_bucket=np.zeros(0, np.int32),
                   source_index=np.zeros(0, np.int64))


def set_gc_threshold(threshold: int) -> None:
    """Raise Python's generation-0 gc threshold to ``threshold`` (0: leave Python's default).

    Decoding allocates a dict per event; at the default (700) the collector runs every few
    hundred events (``SEGSTREAM_GC_THRESHOLD``). Used by the consumer and its decode process.
    """
    if threshold > 0:
        import gc

        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(threshold, max(g1, 20), max(g2, 100))


def _repack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, default=repr)
    except (OverflowError, ValueError, TypeError):
        return repr(obj).encode("utf-8", "replace")


class EventDecoder:
    """Turns raw record values (or already-decoded maps) into an :class:`EventBatch`.

    ``now`` is the wall clock used only for the far-future check; inject a fixed
    one to make replays independent of when they run.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        max_event_bytes: int = 65536,
        min_ts: float = 631152000.0,
        max_clock_skew_s: float = 86400.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.max_event_bytes = max_event_bytes
        self.min_ts = min_ts
        self.max_clock_skew_s = max_clock_skew_s
        self.now = now

    # ------------------------------------------------------------------
    def decode_records(self, raws: Sequence[bytes | None]) -> tuple[EventBatch, list[Rejected]]:
        """Decode msgpack record values; position i of ``raws`` is ``source_index`` i."""
        unpackb = msgpack.unpackb
        limit = self.max_event_bytes
        if raws and None not in raws and max(map(len, raws)) <= limit:  # the usual batch: one pass, no bookkeeping
            try:
                objs = [unpackb(raw, raw=False, strict_map_key=False) for raw in raws]
            except (ValueError, TypeError, RecursionError, OverflowError, MemoryError):
                pass  # some record is bad: the loop below finds which
            else:
                return self._validate(objs, None, raws.__getitem__)  # type: ignore[arg-type]
        rejected: list[Rejected] = []
        objs = []
        source: list[int] = []
        for i, raw in enumerate(raws):
            if raw is None:
                rejected.append(Rejected(i, "null_value", "record value is null", None))
                continue
            if len(raw) > limit:
                rejected.append(Rejected(i, "oversized", f"{len(raw)} bytes > {limit}", raw))
                continue
            try:
                objs.append(unpackb(raw, raw=False, strict_map_key=False))
            except (ValueError, TypeError, RecursionError, OverflowError, MemoryError) as exc:  # bad input, not our crash
                rejected.append(Rejected(i, "undecodable", f"{type(exc).__name__}: {str(exc)[:200]}", raw))
                continue
            source.append(i)
        batch, more = self._validate(objs, source, lambda j: raws[source[j]])  # type: ignore[arg-type, return-value]
        rejected.extend(more)
        rejected.sort(key=lambda r: r.index)
        return batch, rejected

    def decode_objects(self, objs: Sequence[Any]) -> tuple[EventBatch, list[Rejected]]:
        """Validate already-decoded maps (recorded-log replay without a broker)."""
        objs = list(objs)
        return self._validate(objs, None, lambda j: _repack(objs[j]))

    def _validate(self, objs: list[Any], source: list[int] | None,
                  original: Callable[[int], bytes]) -> tuple[EventBatch, list[Rejected]]:
        """Check the decoded maps against the contract (``source``: their positions in the input)."""
        cols, deletes, bad = validate_columns(objs, self.spec, (self.min_ts, self.now() + self.max_clock_skew_s))
        batch = EventBatch(**cols)
        if source is None:
            batch.deletes = deletes
            return batch, [Rejected(j, reason, detail, original(j)) for j, reason, detail in bad]
        src = np.asarray(source, dtype=np.int64)
        batch.source_index = src[batch.source_index]
        batch.deletes = [(source[j], user) for j, user in deletes]
        return batch, [Rejected(source[j], reason, detail, original(j)) for j, reason, detail in bad]
