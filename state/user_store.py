"""Columnar per-user state, updated a micro-batch at a time in event time.

Each user owns one row of a few numpy arrays (no Python object per user). The
dense columns are exponentially decayed sums; decay uses a shared reference
time ``t0`` so that adding an event is a plain addition whatever the order of
events inside a batch: an event at time ``t`` adds ``2 ** ((t - t0) / h)``
(``h`` the half-life), and a user's state as of its last event ``t_u`` is the
row times ``2 ** (-(t_u - t0) / h)``. When the batch's newest event drifts
far from ``t0`` every row is rescaled once ("rebase"), keeping float32 safe:
each row is then stored as of its own last event (its reference ``ref``, one
float64 per row), and a row is brought back to the shared ``t0`` when its user
is next active. Rescaling every row to the new ``t0`` instead would underflow
float32 for users inactive some 126 half-lives (4.8 years at 14 days) and
leave them with no state at all: re-embedding them (a restore, labels
following a new model version) would put them all on the origin.

    >>> from state.features import FeatureSpec
    >>> from state.events import EventDecoder
    >>> spec = FeatureSpec(half_life_s=10.0)
    >>> dec = EventDecoder(spec, now=lambda: 2e9)
    >>> batch, _ = dec.decode_objects([
    ...     {"user_id": "a", "action": "view", "ts": 1e9},
    ...     {"user_id": "a", "action": "purchase", "ts": 1e9 + 10, "value": 3.0},
    ... ])
    >>> store = UserStore(spec, capacity=10)
    >>> rows = store.apply(batch).rows
    >>> f = store.features(rows)
    >>> round(float(f.dense[0, spec.action_index("view")]), 3)  # the view is one half-life old
    0.333
    >>> round(float(f.dense[0, spec.action_index("purchase")]), 3)
    0.667
    >>> len(store), store.user_id(int(rows[0]))
    (1, 'a')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from state.features import FeatureSpec
from state.events import EventBatch
from state.id_column import IdColumn
from state.id_index import IdIndex
from state.saved_rows import COLUMNS, SavedRows
from state.user_keys import as_encoded_ids, encode_ids, raw_user_keys, user_keys

__all__ = ["UserStore", "Features", "ApplyResult", "user_keys", "MAX_PARTITION", "COLUMNS"]

#: Rescale every row once the newest event is this many half-lives past t0 (2**48 << float32 max).
REBASE_HALF_LIVES = 48.0
_TINY = 1e-30
#: log1p(x) / _LOG_SCALE is ~1 at x = 1000: keeps count and value features in the range of the mixes
_LOG_SCALE = float(np.log1p(1000.0))
#: Highest source partition a row can name (``partition`` is int16: 2 bytes a user less than int32, and a
#: topic of more than 32,768 partitions is far past what Kafka clusters run).
MAX_PARTITION = int(np.iinfo(np.int16).max)


@dataclass
class Features:
    """Encoder input for a set of rows: normalised dense features and the recent items."""

    dense: np.ndarray  # float32 [n, spec.feature_width]
    item_tokens: np.ndarray  # int32 [n, spec.item_history], -1 = empty slot
    item_weights: np.ndarray  # float32 [n, spec.item_history], decayed weight as of the user's last event

    def __len__(self) -> int:
        return len(self.dense)

    def take(self, idx: np.ndarray) -> Features:
        return Features(self.dense[idx], self.item_tokens[idx], self.item_weights[idx])


@dataclass
class ApplyResult:
    rows: np.ndarray  # rows touched by the batch, in order of first appearance
    new_users: int  # rows created by this batch
    last_event: np.ndarray  # per touched row: batch index of its newest event (by ts, then arrival)
    evicted_rows: np.ndarray  # rows freed to make room (their user ids are gone)
    evicted_segments: np.ndarray  # segment each evicted user held (-1: none)
    evicted_user_ids: list[str]
    #: users of this batch evicted within it (more users in one batch than capacity): their events of the
    #: batch are not kept; those already held are in ``evicted_*`` too, ``overflow_new`` counts the others
    overflow: int = 0
    overflow_new: int = 0


class UserStore(SavedRows):
    """Bounded, columnar store of per-user state.

    ``capacity`` users at most; beyond it the least recently active users (by
    event time) are evicted, 1% of capacity at a time. A batch with more users
    than ``capacity`` keeps its ``capacity`` most recently active users (by
    their newest event, then arrival) and evicts the others within the batch:
    the bound holds, and applying then evicting them would leave the same state.
    """

    def __init__(self, spec: FeatureSpec, capacity: int, initial_rows: int = 1024) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self.spec = spec
        self.capacity = capacity
        self.t0: float | None = None
        self._ids = IdColumn()  # row -> user id, UTF-8 (see encode_ids), inline in numpy (a list costs ~55 bytes a user)
        self._index = IdIndex(self._ids)  # UTF-8 id -> row, in numpy (a dict costs ~74 bytes a user)
        self._free: list[int] = []
        self.imported_rows = np.zeros(0, dtype=np.int64)  # rows the last import_rows gave its users
        self._used = 0  # rows ever handed out (high-water mark)
        # called with (rows, user ids) of evicted users before their rows are cleared (state/contract_tail.py)
        self.on_evict: Callable[[np.ndarray, list[str]], None] | None = None
        self._alloc(min(capacity, initial_rows))

    # ----- storage -------------------------------------------------------
    def _alloc(self, rows: int) -> None:
        spec = self.spec
        old = getattr(self, "dense", None)
        n_old = 0 if old is None else len(old)

        def grow(name: str, shape: tuple[int, ...], dtype: type, fill: float) -> None:
            new = np.full(shape, fill, dtype=dtype)
            if n_old:
                new[:n_old] = getattr(self, name)
            setattr(self, name, new)

        grow("dense", (rows, spec.dense_width), np.float32, 0.0)
        grow("last_ts", (rows,), np.float64, -np.inf)
        grow("ref", (rows,), np.float64, -np.inf)  # time the row's sums are stored against (t0, or its last event)
        grow("items", (rows, spec.item_history), np.int32, -1)
        grow("item_w", (rows, spec.item_history), np.float32, 0.0)
        grow("item_head", (rows,), np.uint8, 0)
        grow("segment", (rows,), np.int32, -1)
        grow("seq", (rows,), np.uint32, 0)
        grow("distance", (rows,), np.float32, np.nan)
        grow("partition", (rows,), np.int16, -1)  # source partition of the user's newest event (-1: unknown)
        # user_keys() of each row's user, set when the row is handed out (derived from the id; the changelog row
        # carries it too, so that a restore need not hash every id again)
        grow("key", (rows,), np.uint64, 0)
        self._ids.grow(rows)

    def __len__(self) -> int:
        return len(self._index)

    def reserve(self, users: int) -> None:
        """Room for ``users`` more users in one allocation (a restore knows how many come; growing by doubling
        on the way would copy every column several times)."""
        if self._used + users > len(self.dense):
            self._alloc(min(self.capacity, self._used + users))

    def nbytes(self) -> int:
        """Bytes held by the numpy state columns (the row key, the ids and the id index come on top)."""
        return sum(getattr(self, n).nbytes for n in COLUMNS) + self.ref.nbytes

    def ids_nbytes(self) -> int:
        """Bytes held by the ids (row -> id)."""
        return self._ids.nbytes()

    def index_nbytes(self) -> int:
        """Bytes held by the id index (id -> row)."""
        return self._index.nbytes()

    def row_of(self, user_id: str) -> int | None:
        return self._index.get(user_id.encode("utf-8", "surrogatepass"))

    def rows_or_missing(self, user_ids: list[str] | list[bytes]) -> np.ndarray:
        """Row of each user (int64), -1 for a user not held, at once; ids as ``str`` or already UTF-8
        encoded (as the changelog keys them)."""
        return self._index.get_many(as_encoded_ids(user_ids))

    def rows_of(self, user_ids: list[str]) -> np.ndarray:
        """Rows of users known to be held (KeyError otherwise), at once."""
        rows = self._index.get_many(encode_ids(user_ids))
        if len(rows) and rows.min() < 0:
            raise KeyError(user_ids[int(np.argmin(rows))])
        return rows

    def user_id(self, row: int) -> str:
        uid = self._ids[row]
        if uid is None:
            raise KeyError(f"row {row} holds no user")
        return uid.decode("utf-8", "surrogatepass")

    def user_ids(self, rows: np.ndarray) -> list[str]:
        return [u.decode("utf-8", "surrogatepass") for u in self._ids.take(rows)]

    def user_id_bytes(self, rows: np.ndarray) -> list[bytes]:
        """The ids of these rows as stored (UTF-8, surrogatepass): what a Kafka key needs, without a
        round trip through ``str``."""
        return self._ids.take(rows)  # type: ignore[return-value]

    def held_ids(self) -> list[str]:
        """Every user held, as the id index has them (its order)."""
        return self.user_ids(np.asarray(self._index.values(), dtype=np.int64))

    def holds_user(self, rows: np.ndarray) -> np.ndarray:
        """Whether each row still holds a user (not freed by eviction, deletion or a dropped partition):
        a held row has seen an event, a free one is reset to ``last_ts = -inf``."""
        return np.isfinite(self.last_ts[rows])

    def live_rows(self) -> np.ndarray:
        """Rows that hold a user, ascending (a held row has a finite ``last_ts``; see :meth:`holds_user`)."""
        return np.flatnonzero(np.isfinite(self.last_ts[: self._used]))

    # ----- rows ------------------------------------------------------------
    def _rows_for(self, user_ids: list[str]) -> tuple[np.ndarray, int, ApplyResult | None]:
        raw = encode_ids(user_ids)
        rows = self._index.get_many(raw)
        missing = np.flatnonzero(rows < 0)
        if len(missing) == 0:
            return rows, 0, None
        evicted = None
        available = len(self._free) + (self.capacity - self._used)
        if available < len(missing):
            evicted = self._evict(len(missing) - available, rows[rows >= 0])
        self._give_rows(rows, missing, raw)
        return rows, len(missing), evicted

    def _give_rows(self, rows: np.ndarray, missing: np.ndarray, raw: list[bytes],
                   keys: np.ndarray | None = None) -> None:
        """Rows for the users at ``missing`` (free rows first, newest freed first; then never used rows),
        written into ``rows`` and the id maps (``raw``: the ids as :func:`encode_ids` gives them). The caller has
        made room (eviction). ``keys``: the :func:`user_keys` of every user of ``raw`` when known (else
        computed here)."""
        free = self._free
        taken = [free.pop() for _ in range(min(len(missing), len(free)))]
        fresh = len(missing) - len(taken)
        if fresh:
            if self._used + fresh > len(self.dense):
                self._alloc(min(self.capacity, max(2 * len(self.dense), self._used + fresh, 1024)))
            taken += range(self._used, self._used + fresh)
            self._used += fresh
        rows[missing] = taken
        # whole-list work, no step per user in Python: a restore gives a million rows at once
        new = raw if len(missing) == len(raw) else [raw[i] for i in missing.tolist()]
        self._ids.set_many(taken, new)
        self._index.insert_many(new, taken)  # after the ids: the index confirms a hit against them
        self.key[taken] = raw_user_keys(new) if keys is None else keys[missing]

    def _evict(self, needed: int, protect: np.ndarray) -> ApplyResult:
        count = max(needed, self.capacity // 100, 1)
        keys = self.last_ts[: self._used].copy()
        keys[keys == -np.inf] = np.inf  # free rows are not candidates
        keys[protect] = np.inf
        count = min(count, int(np.isfinite(keys).sum()))
        if count < needed:
            raise RuntimeError("max_users is smaller than the users of one micro-batch")
        victims = np.argpartition(keys, count - 1)[:count] if count < len(keys) else np.arange(len(keys))
        victims = np.sort(victims)
        segs = self.segment[victims].copy()
        ids = self.user_ids(victims)
        if self.on_evict is not None:
            self.on_evict(victims, ids)
        self._index.delete_many(self._ids.take(victims))
        self._clear(victims)
        self._free.extend(victims.tolist()[::-1])
        return ApplyResult(rows=victims[:0], new_users=0, last_event=victims[:0], evicted_rows=victims, evicted_segments=segs, evicted_user_ids=ids)

    def _clear(self, rows: np.ndarray) -> None:
        self.dense[rows] = 0.0
        self.last_ts[rows] = -np.inf
        self.ref[rows] = -np.inf
        self.items[rows] = -1
        self.item_w[rows] = 0.0
        self.item_head[rows] = 0
        self.segment[rows] = -1
        self.seq[rows] = 0
        self.distance[rows] = np.nan
        self.partition[rows] = -1
        self.key[rows] = 0
        self._ids.clear_many(rows)

    def delete(self, user_id: str) -> int | None:
        """Forget a user entirely (right to erasure). Returns the segment it held, or None if unknown."""
        row = self._index.pop(user_id.encode("utf-8", "surrogatepass"), None)
        if row is None:
            return None
        seg = int(self.segment[row])
        self._clear(np.array([row]))
        self._free.append(row)
        return seg

    # ----- decay -----------------------------------------------------------
    def _rebase(self, t_new: float) -> None:
        """Move ``t0`` to ``t_new``; every row is stored as of its last event until its user is next active."""
        assert self.t0 is not None
        n = self._used
        last, ref = self.last_ts[:n], self.ref[:n]
        target = np.where(np.isfinite(last), last, ref)
        with np.errstate(invalid="ignore"):  # rows never used: -inf - -inf
            e = (ref - target) / self.spec.half_life_s
        factor = np.exp2(np.where(np.isfinite(e), e, 0.0)).astype(np.float32)
        self.dense[:n] *= factor[:, None]
        self.item_w[:n] *= factor[:, None]
        self.ref[:n] = target
        self.t0 = t_new

    def _to_shared(self, rows: np.ndarray) -> None:
        """Rows stored against their own reference go back to ``t0`` (their user is active again); what
        underflows then is history far older than the event that brings them back."""
        ref = self.ref[rows]
        off = ref != self.t0
        if off.any():
            r = rows[off]
            factor = np.exp2((ref[off] - self.t0) / self.spec.half_life_s).astype(np.float32)  # <= 1; 0 for -inf
            self.dense[r] *= factor[:, None]
            self.item_w[r] *= factor[:, None]
            self.ref[r] = self.t0

    # ----- the update ------------------------------------------------------
    def apply(self, batch: EventBatch) -> ApplyResult:
        """Fold a batch of events into the state; returns the rows it touched."""
        n = len(batch)
        if n == 0:
            e = np.zeros(0, dtype=np.int64)
            return ApplyResult(e, 0, e, e, e.astype(np.int32), [])
        local: dict[str, int] = {}  # user -> position in first-appearance order, in one pass
        number = local.setdefault
        inv = np.fromiter([number(u, len(local)) for u in batch.user_ids], dtype=np.int64, count=n)
        uniq = list(local)
        kept: np.ndarray | None = None  # batch positions kept, when the batch brings more users than capacity
        overflow: ApplyResult | None = None
        if len(uniq) > self.capacity:
            batch, inv, uniq, kept, overflow = self._overflow(batch, inv, uniq)
            n = len(batch)
        rows_u, new_users, evicted = self._rows_for(uniq)
        if overflow is not None:
            evicted = overflow if evicted is None else ApplyResult(
                rows_u[:0], 0, rows_u[:0], np.concatenate([overflow.evicted_rows, evicted.evicted_rows]),
                np.concatenate([overflow.evicted_segments, evicted.evicted_segments]),
                overflow.evicted_user_ids + evicted.evicted_user_ids)
        spec = self.spec
        h = spec.half_life_s
        ts = batch.ts
        t_max = float(ts.max())
        if self.t0 is None:
            self.t0 = t_max
        elif (t_max - self.t0) / h > REBASE_HALF_LIVES:
            self._rebase(t_max)
        self._to_shared(rows_u)
        w = np.exp2((ts - self.t0) / h)

        # dense columns: one bincount over (local user, column) pairs
        D = spec.dense_width
        U = len(uniq)
        base = inv * D
        has_v = ~np.isnan(batch.values)
        idx = [base + spec.COUNT, base + spec.action_offset + batch.actions]
        wts = [w, w]
        if has_v.any():
            bv = base[has_v]
            idx += [bv + spec.VALUE_SUM, bv + spec.VALUE_COUNT]
            wts += [w[has_v] * batch.values[has_v], w[has_v]]
        if len(batch.cat_event):
            ev = batch.cat_event
            per_event = np.bincount(ev, minlength=n)
            idx.append(base[ev] + spec.category_offset + batch.cat_bucket)
            wts.append(w[ev] / per_event[ev])
        delta = np.bincount(np.concatenate(idx), np.concatenate(wts), minlength=U * D).reshape(U, D)
        self.dense[rows_u] += delta.astype(np.float32)

        newest = np.full(U, -np.inf)
        np.maximum.at(newest, inv, ts)
        self.last_ts[rows_u] = np.maximum(self.last_ts[rows_u], newest)

        self._push_items(batch, inv, w, rows_u)
        order = np.lexsort((np.arange(n), ts, inv))
        inv_sorted = inv[order]
        is_last = np.r_[inv_sorted[1:] != inv_sorted[:-1], True]
        last_event = np.empty(U, dtype=np.int64)
        last_event[inv_sorted[is_last]] = order[is_last]
        if kept is not None:
            last_event = kept[last_event]  # positions in the batch as given
        if evicted is None:
            e = np.zeros(0, dtype=np.int64)
            return ApplyResult(rows_u, new_users, last_event, e, e.astype(np.int32), [])
        return ApplyResult(rows_u, new_users, last_event, evicted.evicted_rows, evicted.evicted_segments,
                           evicted.evicted_user_ids, overflow=0 if overflow is None else overflow.overflow,
                           overflow_new=0 if overflow is None else overflow.overflow_new)

    def _overflow(self, batch: EventBatch, inv: np.ndarray,
                  uniq: list[str]) -> tuple[EventBatch, np.ndarray, list[str], np.ndarray, ApplyResult]:
        """A batch with more users than capacity: keep the ``capacity`` most recently active of them (by
        newest event, then latest arrival, the order eviction goes by) and evict the rest within the batch.

        Their events are left out rather than applied and then evicted (same state, no row needed); those
        already held are evicted like any least recently active user. Returns the kept events (batch,
        local user numbers, users, positions in the given batch) and the eviction."""
        n, U = len(batch), len(uniq)
        newest = np.full(U, -np.inf)
        np.maximum.at(newest, inv, batch.ts)
        latest = np.zeros(U, dtype=np.int64)
        np.maximum.at(latest, inv, np.arange(n))
        dropped = np.lexsort((latest, newest))[: U - self.capacity]  # least recently active first
        keep_user = np.ones(U, dtype=bool)
        keep_user[dropped] = False
        kept = np.flatnonzero(keep_user[inv])
        renumber = np.cumsum(keep_user) - 1  # kept users stay in first-appearance order
        dropped_ids = [uniq[i] for i in dropped.tolist()]
        held = self._index.get_many(encode_ids(dropped_ids))
        held = held[held >= 0]
        if len(held):
            # every other held row protected: exactly the held users left out are evicted
            evicted = self._evict(len(held), np.setdiff1d(self.live_rows(), held))
        else:
            e = np.zeros(0, dtype=np.int64)
            evicted = ApplyResult(e, 0, e, e, e.astype(np.int32), [])
        evicted.overflow, evicted.overflow_new = len(dropped), len(dropped) - len(held)
        kept_users = [u for u, k in zip(uniq, keep_user.tolist()) if k]
        return batch.select(keep_user[inv]), renumber[inv[kept]], kept_users, kept, evicted

    def _push_items(self, batch: EventBatch, inv: np.ndarray, w: np.ndarray, rows_u: np.ndarray) -> None:
        """Write each user's newest items of the batch into its ring of recent items."""
        ev = np.flatnonzero(batch.item_tokens >= 0)
        if len(ev) == 0:
            return
        N = self.spec.item_history
        order = np.lexsort((ev, batch.ts[ev], inv[ev]))  # by user, then event time, then arrival
        ev = ev[order]
        users = inv[ev]
        counts = np.bincount(users, minlength=len(rows_u))
        starts = np.cumsum(counts) - counts
        rank = np.arange(len(ev)) - starts[users]
        keep_n = np.minimum(counts, N)
        skipped = counts - keep_n  # older events overwritten within this same batch
        keep = rank >= skipped[users]
        ev, users, rank = ev[keep], users[keep], rank[keep] - skipped[users[keep]]
        rows = rows_u[users]
        pos = (self.item_head[rows].astype(np.int64) + rank) % N
        self.items[rows, pos] = batch.item_tokens[ev]
        self.item_w[rows, pos] = w[ev]
        touched = keep_n > 0
        self.item_head[rows_u[touched]] = ((self.item_head[rows_u[touched]].astype(np.int64) + keep_n[touched]) % N).astype(np.uint8)

    # ----- reading ---------------------------------------------------------
    def decay_scale(self, rows: np.ndarray) -> np.ndarray:
        """Factor turning a row's stored sums into sums as of the user's last event."""
        assert self.t0 is not None
        # capped so that a row whose sums underflowed to 0 reads as 0, never as 0 * inf
        e = -(self.last_ts[rows] - self.ref[rows]) / self.spec.half_life_s
        return np.exp2(np.minimum(np.where(np.isnan(e), 0.0, e), 1000.0))  # nan: a row with no event at all

    def features(self, rows: np.ndarray, *, items: bool = True) -> Features:
        """Normalised encoder input for ``rows`` (as of each user's last event).

        Columns: action mix (sums to 1), category mix (sums to 1, or all 0),
        log decayed event count, signed log mean value (both /log(1001)), and
        the share of events that carried a value. ``items=False`` leaves the
        recent-item columns empty (``[n, 0]``), for encoders that do not read them.
        """
        spec = self.spec
        d = self.dense[rows]
        count = d[:, spec.COUNT].astype(np.float64)
        safe = np.maximum(count, _TINY)
        scale = self.decay_scale(rows) if len(rows) else np.zeros(0)
        a0, c0 = spec.action_offset, spec.category_offset
        actions = d[:, a0:c0] / safe[:, None]
        cats = d[:, c0:]
        cats = cats / np.maximum(cats.sum(axis=1, dtype=np.float64), _TINY)[:, None]
        vcount = d[:, spec.VALUE_COUNT].astype(np.float64)
        mean_value = np.where(vcount > 0, d[:, spec.VALUE_SUM] / np.maximum(vcount, _TINY), 0.0)
        out = np.empty((len(rows), spec.feature_width), dtype=np.float32)
        out[:, : spec.n_actions] = actions
        out[:, spec.n_actions : spec.n_actions + spec.category_buckets] = cats
        out[:, -3] = np.log1p(count * scale) / _LOG_SCALE
        out[:, -2] = np.sign(mean_value) * np.log1p(np.abs(mean_value)) / _LOG_SCALE
        out[:, -1] = vcount / safe
        if not items:
            return Features(out, np.zeros((len(rows), 0), np.int32), np.zeros((len(rows), 0), np.float32))
        iw = (self.item_w[rows] * scale[:, None]).astype(np.float32)
        return Features(out, self.items[rows], iw)

    # ----- checkpoints and rebalances -----------------------------
    def rows_of_partition(self, partition: int) -> np.ndarray:
        """Live rows whose newest event came from ``partition`` (ascending)."""
        live = self.live_rows()
        return live[self.partition[live] == partition]

    def drop_rows(self, rows: np.ndarray) -> list[str]:
        """Forget these users without any erasure semantics (their partition moved to another consumer)."""
        rows = np.asarray(rows, dtype=np.int64)
        ids = self.user_ids(rows)
        self._index.delete_many(self._ids.take(rows))
        self._clear(rows)
        self._free.extend(rows.tolist()[::-1])
        return ids
