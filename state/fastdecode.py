"""Column-at-a-time validation of input contract v1 (the decoder's fast path).

Per-record validation in Python costs ~10 µs an event. Here each field is
pulled out of every map of the micro-batch at once and checked with
whole-column tests (type sets, numpy range checks); only records that fail
a column test go through the per-record path in :mod:`state.events`, which
gives the precise rejection reason. The fast path accepts a subset of what
the per-record path accepts and produces identical columns for it (a
property test in ``tests/state/test_events.py`` compares the two).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from state.features import FeatureSpec

__all__ = ["fast_columns"]

_NONE = type(None)


def _short_str(x: Any, limit: int) -> bool:
    return type(x) is str and 0 < len(x) <= limit


def _id_ok(col: list[Any], types: set[type], limit: int, *, optional: bool) -> list[bool] | None:
    """None when every entry is fine; else a per-entry mask (``types``: the column's entry types)."""
    allowed = {str, int, _NONE} if optional else {str, int}
    if types <= allowed:
        strs = col if types <= {str} else [x for x in col if type(x) is str]
        lengths = set(map(len, strs))  # few distinct lengths: min and max over the set, one pass over the column
        if not lengths or (min(lengths) > 0 and max(lengths) <= limit):
            return None
    return [(type(x) is int) or _short_str(x, limit) or (optional and x is None) for x in col]


def _categories_ok(cats: list[Any], types: set[type], max_categories: int,
                   max_category: int) -> tuple[list[bool] | None, list[Any]]:
    """(None, every category in order) when every entry is None or a list of at most ``max_categories``
    short strings; else (a per-entry mask, []). ``types``: the column's entry types."""
    if types <= {list, _NONE}:
        lists = [c for c in cats if c]
        flat = list(itertools.chain.from_iterable(lists))
        if (not lists or max(map(len, lists)) <= max_categories) and (
                not flat or (set(map(type, flat)) <= {str} and max(set(map(len, flat))) <= max_category)):
            return None, flat
    return [c is None or (type(c) is list and (not c or (len(c) <= max_categories and all(
        type(x) is str and len(x) <= max_category for x in c)))) for c in cats], []


def _numbers(col: list[Any], *, optional: bool) -> tuple[np.ndarray, list[bool] | None]:
    """float64 column (NaN for None) and a mask of entries that are not plain numbers or None."""
    types = set(map(type, col))
    if types <= {float, int, _NONE} and (optional or _NONE not in types):
        try:
            arr = np.array([math.nan if x is None else x for x in col] if _NONE in types else col, dtype=np.float64)
            return arr, None
        except (OverflowError, TypeError, ValueError):
            pass
    mask = [(type(x) is float or type(x) is int or (optional and x is None)) for x in col]
    out = np.full(len(col), math.nan)
    for i, (x, ok) in enumerate(zip(col, mask)):
        if ok and x is not None:
            try:
                out[i] = float(x)
            except OverflowError:
                mask[i] = False
    return out, mask


def fast_columns(objs: Sequence[Any], spec: FeatureSpec, *, min_ts: float, max_ts: float, delete_action: str,
                 max_id: int, max_action: int, max_categories: int, max_category: int,
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """Columns of the records that pass every column test, and the mask of those records.

    Records outside the mask (not maps, any doubtful field, deletes) are left to
    the per-record path.
    """
    n = len(objs)
    if set(map(type, objs)) <= {dict}:
        ok = np.ones(n, dtype=bool)
    else:
        ok = np.fromiter((type(o) is dict for o in objs), dtype=bool, count=n)
    maps = [o for o, good in zip(objs, ok) if good] if not ok.all() else list(objs)
    pos = np.flatnonzero(ok)
    m = len(maps)
    good = np.ones(m, dtype=bool)

    def fail(mask: list[bool] | None) -> None:
        if mask is not None:
            good[~np.asarray(mask, dtype=bool)] = False

    users = [o.get("user_id") for o in maps]
    user_types = set(map(type, users))
    fail(_id_ok(users, user_types, max_id, optional=False))
    actions = [o.get("action") for o in maps]
    action_lengths = set(map(len, actions)) if set(map(type, actions)) <= {str} else set()
    if not (m and min(action_lengths, default=0) > 0 and max(action_lengths) <= max_action):
        fail([_short_str(a, max_action) for a in actions])
    ts, mask = _numbers([o.get("ts") for o in maps], optional=False)
    fail(mask)
    with np.errstate(invalid="ignore"):
        good &= np.isfinite(ts) & (ts >= min_ts) & (ts <= max_ts)
    event_ids = [o.get("event_id") for o in maps]
    event_id_types = set(map(type, event_ids))
    any_event_id = bool(event_id_types - {_NONE})
    if any_event_id:
        fail(_id_ok(event_ids, event_id_types, max_id, optional=True))
    items = [o.get("item_id") for o in maps]
    fail(_id_ok(items, set(map(type, items)), max_id, optional=True))
    raw_values = [o.get("value") for o in maps]
    values, mask = _numbers(raw_values, optional=True)
    fail(mask)
    with np.errstate(invalid="ignore"):
        finite = np.abs(values) <= 3.0e38  # False for NaN (absent values read as NaN) and inf
    if int(np.count_nonzero(~finite)) != raw_values.count(None):  # NaN or inf given explicitly
        good &= finite | np.fromiter((v is None for v in raw_values), dtype=bool, count=m)
    cats = [o.get("categories") for o in maps]
    cat_types = set(map(type, cats))
    cat_mask, flat = _categories_ok(cats, cat_types, max_categories, max_category)
    fail(cat_mask)
    if delete_action in actions:
        good &= np.array([a != delete_action for a in actions], dtype=bool)

    keep = np.flatnonzero(good)
    accepted = np.zeros(n, dtype=bool)
    accepted[pos[keep]] = True
    if len(keep) < m:
        sel: Callable[[list[Any]], list[Any]] = lambda col: [col[i] for i in keep.tolist()]  # noqa: E731
        users, actions, items, cats, event_ids = sel(users), sel(actions), sel(items), sel(cats), sel(event_ids)
        ts, values = ts[keep], values[keep]
        flat = list(itertools.chain.from_iterable(c for c in cats if c))
    per_event = (np.fromiter(map(len, cats), dtype=np.int64, count=len(cats)) if _NONE not in cat_types
                 else np.fromiter((len(c) if c else 0 for c in cats), dtype=np.int64, count=len(cats)))
    columns = {
        "user_ids": users if user_types <= {str} else [u if type(u) is str else str(u) for u in users],
        "actions": spec.action_indices(actions),
        "ts": ts,
        "item_tokens": spec.item_tokens(items),
        "values": values.astype(np.float32),
        "cat_event": np.repeat(np.arange(len(cats), dtype=np.int32), per_event),
        "cat_bucket": spec.category_buckets_of(flat),
        "source_index": pos[keep].astype(np.int64),
        "event_ids": (event_ids if event_id_types <= {str, _NONE}
                      else [e if e is None or type(e) is str else str(e) for e in event_ids]) if any_event_id else [],
    }
    return columns, accepted
