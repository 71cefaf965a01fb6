"""Input contract v1: decode and validate behaviour events into a columnar batch.

A record value is a msgpack map::

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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from state.features import FeatureSpec
from state.fastdecode import fast_columns

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

#: Action that erases a user (right to erasure); handled by the pipeline, not counted as behaviour.
DELETE_ACTION = "delete"

MAX_ID_CHARS = 256
MAX_ACTION_CHARS = 64
MAX_CATEGORIES = 64
MAX_CATEGORY_CHARS = 256


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


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
            deletes=self.deletes,
        )

    @classmethod
    def empty(cls) -> EventBatch:
        return _Columns().finish()


class _Columns:
    __slots__ = ("user_ids", "actions", "ts", "items", "values", "cat_event", "cat_bucket", "source", "event_ids",
                 "deletes", "any_event_id")

    def __init__(self) -> None:
        self.user_ids: list[str] = []
        self.actions: list[int] = []
        self.ts: list[float] = []
        self.items: list[int] = []
        self.values: list[float] = []
        self.cat_event: list[int] = []
        self.cat_bucket: list[int] = []
        self.source: list[int] = []
        self.event_ids: list[str | None] = []
        self.deletes: list[tuple[int, str]] = []
        self.any_event_id = False

    def finish(self) -> EventBatch:
        return EventBatch(
            user_ids=self.user_ids,
            actions=np.asarray(self.actions, dtype=np.int16),
            ts=np.asarray(self.ts, dtype=np.float64),
            item_tokens=np.asarray(self.items, dtype=np.int64),
            values=np.asarray(self.values, dtype=np.float32),
            cat_event=np.asarray(self.cat_event, dtype=np.int32),
            cat_bucket=np.asarray(self.cat_bucket, dtype=np.int32),
            source_index=np.asarray(self.source, dtype=np.int64),
            event_ids=self.event_ids if self.any_event_id else [],
            deletes=self.deletes,
        )


def set_gc_threshold(threshold: int) -> None:
    """Raise Python's generation-0 gc threshold to ``threshold`` (0: leave Python's default).

    Decoding allocates a dict per event; at the default (700) the collector runs every few
    hundred events (``SEGSTREAM_GC_THRESHOLD``). Used by the consumer and its decode process.
    """
    if threshold > 0:
        import gc

        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(threshold, max(g1, 20), max(g2, 100))


def _id(obj: dict, name: str, *, required: bool) -> str | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Invalid("missing_field", name)
        return None
    t = type(v)
    if t is str:
        if not v or len(v) > MAX_ID_CHARS:
            raise _Invalid("bad_value", f"{name}: empty or longer than {MAX_ID_CHARS} chars")
        return v
    if t is int:
        return str(v)
    raise _Invalid("bad_type", f"{name}: expected str or int, got {t.__name__}")


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
        """Column tests for the bulk of the batch, the per-record path for the rest (precise reasons)."""
        max_ts = self.now() + self.max_clock_skew_s
        cols, accepted = fast_columns(
            objs, self.spec, min_ts=self.min_ts, max_ts=max_ts, delete_action=DELETE_ACTION, max_id=MAX_ID_CHARS,
            max_action=MAX_ACTION_CHARS, max_categories=MAX_CATEGORIES, max_category=MAX_CATEGORY_CHARS)
        src = np.arange(len(objs), dtype=np.int64) if source is None else np.asarray(source, dtype=np.int64)
        fast = EventBatch(**cols)
        fast.source_index = src[fast.source_index] if len(fast) else fast.source_index
        rejected: list[Rejected] = []
        if accepted.all():
            return fast, rejected
        slow = _Columns()
        for j in np.flatnonzero(~accepted).tolist():
            try:
                self._append(slow, int(src[j]), objs[j], max_ts)
            except _Invalid as bad:
                rejected.append(Rejected(int(src[j]), bad.reason, bad.detail, original(j)))
        return _merge(fast, slow.finish()), rejected

    # ------------------------------------------------------------------
    def _append(self, cols: _Columns, i: int, obj: Any, max_ts: float) -> None:
        if type(obj) is not dict:
            raise _Invalid("not_a_map", f"expected a map, got {type(obj).__name__}")
        user = _id(obj, "user_id", required=True)
        action = obj.get("action")
        if action is None:
            raise _Invalid("missing_field", "action")
        if type(action) is not str:
            raise _Invalid("bad_type", f"action: expected str, got {type(action).__name__}")
        if not action or len(action) > MAX_ACTION_CHARS:
            raise _Invalid("bad_value", f"action: empty or longer than {MAX_ACTION_CHARS} chars")
        ts = obj.get("ts")
        if ts is None:
            raise _Invalid("missing_field", "ts")
        tt = type(ts)
        if tt is not float and tt is not int:
            raise _Invalid("bad_type", f"ts: expected int or float, got {tt.__name__}")
        if tt is int:
            if not -(2**53) < ts < 2**53:
                raise _Invalid("ts_out_of_range", f"ts={ts}")
            ts = float(ts)
        if not math.isfinite(ts):
            raise _Invalid("non_finite", f"ts={ts}")
        if ts < self.min_ts or ts > max_ts:
            raise _Invalid("ts_out_of_range", f"ts={ts} outside [{self.min_ts:.0f}, {max_ts:.0f}]")
        event_id = _id(obj, "event_id", required=False)
        if action == DELETE_ACTION:
            cols.deletes.append((i, user))  # type: ignore[arg-type]
            return
        item = obj.get("item_id")
        token = -1
        if item is not None:
            it = type(item)
            if it is str:
                if not item or len(item) > MAX_ID_CHARS:
                    raise _Invalid("bad_value", f"item_id: empty or longer than {MAX_ID_CHARS} chars")
            elif it is not int:
                raise _Invalid("bad_type", f"item_id: expected str or int, got {it.__name__}")
            token = self.spec.item_token(item)
        value = obj.get("value")
        if value is None:
            v = math.nan
        else:
            vt = type(value)
            if vt is not float and vt is not int:
                raise _Invalid("bad_type", f"value: expected float, got {vt.__name__}")
            try:
                v = float(value)
            except OverflowError:
                raise _Invalid("bad_value", "value: integer too large") from None
            if not math.isfinite(v) or abs(v) > 3.0e38:
                raise _Invalid("non_finite", f"value={value}")
        cats = obj.get("categories")
        buckets: list[int] = []
        if cats is not None:
            if type(cats) is not list:
                raise _Invalid("bad_type", f"categories: expected list, got {type(cats).__name__}")
            if len(cats) > MAX_CATEGORIES:
                raise _Invalid("bad_value", f"categories: {len(cats)} entries > {MAX_CATEGORIES}")
            bucket = self.spec.category_bucket
            for c in cats:
                if type(c) is not str:
                    raise _Invalid("bad_type", f"categories: expected str entries, got {type(c).__name__}")
                if len(c) > MAX_CATEGORY_CHARS:
                    raise _Invalid("bad_value", f"categories: entry longer than {MAX_CATEGORY_CHARS} chars")
                buckets.append(bucket(c))
        # --- all checks passed: append the event's columns ---
        row = len(cols.user_ids)
        cols.user_ids.append(user)  # type: ignore[arg-type]
        cols.actions.append(self.spec.action_index(action))
        cols.ts.append(ts)
        cols.items.append(token)
        cols.values.append(v)
        if buckets:
            cols.cat_event.extend([row] * len(buckets))
            cols.cat_bucket.extend(buckets)
        cols.source.append(i)
        cols.event_ids.append(event_id)
        if event_id is not None:
            cols.any_event_id = True


def _merge(a: EventBatch, b: EventBatch) -> EventBatch:
    """Both batches' events in source order (a and b hold disjoint source positions)."""
    if len(b) == 0 and not b.deletes:
        return a
    if len(a) == 0:
        b.deletes = sorted(a.deletes + b.deletes)
        return b
    order = np.argsort(np.concatenate([a.source_index, b.source_index]), kind="stable")
    new_row = np.empty(len(order), dtype=np.int32)
    new_row[order] = np.arange(len(order), dtype=np.int32)
    both = lambda x, y: [(x + y)[i] for i in order.tolist()]  # noqa: E731
    cat_event = np.concatenate([new_row[a.cat_event], new_row[len(a) + b.cat_event]]).astype(np.int32)
    cat_bucket = np.concatenate([a.cat_bucket, b.cat_bucket]).astype(np.int32)
    corder = np.argsort(cat_event, kind="stable")
    any_ids = bool(a.event_ids or b.event_ids)
    return EventBatch(
        user_ids=both(a.user_ids, b.user_ids),
        actions=np.concatenate([a.actions, b.actions])[order], ts=np.concatenate([a.ts, b.ts])[order],
        item_tokens=np.concatenate([a.item_tokens, b.item_tokens])[order],
        values=np.concatenate([a.values, b.values])[order],
        cat_event=cat_event[corder], cat_bucket=cat_bucket[corder],
        source_index=np.concatenate([a.source_index, b.source_index])[order],
        event_ids=both(a.event_ids or [None] * len(a), b.event_ids or [None] * len(b)) if any_ids else [],
        deletes=sorted(a.deletes + b.deletes),
    )
