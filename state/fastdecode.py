"""Input contract v1 applied a column at a time (the decoder's hot path).

Per-record validation in Python costs ~10 µs an event. Here each field of
:data:`state.event_contract.FIELDS` is pulled out of every map of the
micro-batch at once and tested as a whole column against its rule (type sets,
the set of string lengths, numpy range checks). Column tests only *doubt*
records; each doubted record (and each delete) is judged by
:func:`~state.event_contract.first_violation`, which names the precise reason.
Both read the same rule table, so a rule is written once; the property test in
``tests/state/test_events.py`` checks that no column test passes a record the
rule rejects.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from state.event_contract import (DELETE_ACTION, EXACT_INT, FIELDS, NUMBER, STRING, FieldRule, first_violation,
                                  is_delete)
from state.features import FeatureSpec

__all__ = ["validate_columns"]

_NONE = type(None)


def _allowed(rule: FieldRule) -> set[type]:
    return set(rule.types) if rule.required else {*rule.types, _NONE}


def _string_doubts(rule: FieldRule, col: list[Any], types: set[type]) -> list[bool] | None:
    """None when every entry keeps ``rule``; else a per-entry mask of the doubtful ones."""
    if types <= _allowed(rule):
        strs = col if types <= {str} else [x for x in col if type(x) is str] if str in types else []
        lengths = set(map(len, strs))  # few distinct lengths: min and max over the set, one pass over the column
        if not lengths or (min(lengths) > 0 and max(lengths) <= rule.max_len):
            return None
    ok_types, optional, limit = set(rule.types), not rule.required, rule.max_len
    return [not ((x is None and optional) or (type(x) in ok_types and (type(x) is not str or 0 < len(x) <= limit)))
            for x in col]


def _as_float(x: Any, types: tuple[type, ...]) -> float:
    if type(x) in types:
        try:
            return float(x)
        except OverflowError:
            pass
    return math.nan  # not a number of the rule's types: doubted below, as NaN is


def _number_doubts(rule: FieldRule, col: list[Any], types: set[type],
                   window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 column (NaN where absent or not a number) and the mask of doubtful entries (None: none)."""
    arr = None
    if types <= _allowed(rule):
        try:
            arr = np.array([math.nan if x is None else x for x in col] if _NONE in types else col, dtype=np.float64)
        except (OverflowError, TypeError, ValueError):
            pass
    if arr is None:
        arr = np.fromiter((_as_float(x, rule.types) for x in col), dtype=np.float64, count=len(col))
    with np.errstate(invalid="ignore"):
        ok = np.abs(arr) <= min(rule.max_abs, sys.float_info.max)  # False for NaN and inf
        if rule.event_time:
            lo, hi = window
            ok &= (arr >= lo) & (arr <= hi)
            if int in types and not (-EXACT_INT < lo and hi < EXACT_INT):
                ok[:] = False  # a window this wide no longer keeps out inexact ints: judge every record
    if ok.all():
        return arr, None
    absent = not rule.required and _NONE in types
    if absent and int(np.count_nonzero(~ok)) == col.count(None):
        return arr, None  # only absent entries read as NaN
    if absent:
        ok |= np.fromiter((x is None for x in col), dtype=bool, count=len(col))
    return arr, ~ok


def _list_doubts(rule: FieldRule, col: list[Any], types: set[type]) -> tuple[list[bool] | None, list[Any]]:
    """(None, every entry of every list in order) when each list keeps ``rule``; else (a per-list mask of
    the doubtful ones, [])."""
    limit, entry_limit = rule.max_len, rule.max_entry_len
    if types <= _allowed(rule):
        lists = [c for c in col if c]
        flat = list(itertools.chain.from_iterable(lists))
        if (not lists or max(map(len, lists)) <= limit) and (
                not flat or (set(map(type, flat)) <= {str} and max(set(map(len, flat))) <= entry_limit)):
            return None, flat
    optional = not rule.required
    return [not ((c is None and optional) or (type(c) is list and len(c) <= limit and all(
        type(x) is str and len(x) <= entry_limit for x in c))) for c in col], []


def validate_columns(objs: Sequence[Any], spec: FeatureSpec, window: tuple[float, float],
                     ) -> tuple[dict[str, Any], list[tuple[int, Any]], list[tuple[int, str, str]]]:
    """The valid events' columns (``source_index``: position in ``objs``), the deletes (position, user
    id) and the rejected records (position, reason, detail), each in input order.

    ``window``: the accepted event times, [min_ts, max_ts].
    """
    n = len(objs)
    if set(map(type, objs)) <= {dict}:
        is_map = np.ones(n, dtype=bool)
    else:
        is_map = np.fromiter((type(o) is dict for o in objs), dtype=bool, count=n)
    maps = [o for o, good in zip(objs, is_map) if good] if not is_map.all() else list(objs)
    pos = np.flatnonzero(is_map)
    m = len(maps)
    doubt = np.zeros(m, dtype=bool)
    cols: dict[str, list[Any]] = {}
    col_types: dict[str, set[type]] = {}
    numbers: dict[str, np.ndarray] = {}
    flat: list[Any] | None = None  # every category of the kept rows, in order
    for rule in FIELDS:
        name = rule.name  # a local: the comprehension below reads it once per map
        col = cols[name] = [o.get(name) for o in maps]
        types = col_types[name] = set(map(type, col))
        if rule.kind == STRING:
            mask: Any = _string_doubts(rule, col, types)
        elif rule.kind == NUMBER:
            numbers[name], mask = _number_doubts(rule, col, types, window)
        else:
            mask, flat = _list_doubts(rule, col, types)
            flat = flat if mask is None else None
        if mask is not None:
            doubt |= np.asarray(mask, dtype=bool)
    users, actions, items, cats, event_ids = (cols["user_id"], cols["action"], cols["item_id"], cols["categories"],
                                              cols["event_id"])
    if DELETE_ACTION in actions:  # deletes are judged one by one: they skip the behaviour fields
        doubt |= np.array([a == DELETE_ACTION for a in actions], dtype=bool)

    deletes: list[tuple[int, Any]] = []
    rejected: list[tuple[int, str, str]] = []
    keep = ~doubt
    if doubt.any() or m < n:
        judged = np.zeros(n, dtype=bool)
        judged[pos[doubt]] = True
        judged[~is_map] = True
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[pos] = np.arange(m)
        for i in np.flatnonzero(judged).tolist():
            obj = objs[i]
            bad = first_violation(obj, window)
            if bad is not None:
                rejected.append((i, *bad))
            elif is_delete(obj):
                u = obj["user_id"]
                deletes.append((i, u if type(u) is str else str(u)))
            else:
                keep[row_of[i]] = True  # doubted by a column test, valid after all
    rows = np.flatnonzero(keep)
    ts, values = numbers["ts"], numbers["value"]
    if len(rows) < m:
        sel = rows.tolist()
        users, actions, items, cats, event_ids = ([col[i] for i in sel] for col in (users, actions, items, cats,
                                                                                    event_ids))
        ts, values = ts[rows], values[rows]
        flat = None
    if flat is None:
        flat = list(itertools.chain.from_iterable(c for c in cats if c))
    cat_types = col_types["categories"]
    per_event = (np.fromiter(map(len, cats), dtype=np.int64, count=len(cats)) if _NONE not in cat_types
                 else np.fromiter((len(c) if c else 0 for c in cats), dtype=np.int64, count=len(cats)))
    user_types, event_id_types = col_types["user_id"], col_types["event_id"]
    columns = {
        "user_ids": users if user_types <= {str} else [u if type(u) is str else str(u) for u in users],
        "actions": spec.action_indices(actions),
        "ts": ts,
        "item_tokens": spec.item_tokens(items),
        "item_names": spec.take_item_names(),
        "values": values.astype(np.float32),
        "cat_event": np.repeat(np.arange(len(cats), dtype=np.int32), per_event),
        "cat_bucket": spec.category_buckets_of(flat),
        "source_index": pos[rows].astype(np.int64),
        "event_ids": (event_ids if event_id_types <= {str, _NONE}
                      else [e if e is None or type(e) is str else str(e) for e in event_ids])
        if event_id_types - {_NONE} else [],
    }
    return columns, deletes, rejected
