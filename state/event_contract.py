"""Input contract v1, field by field: the one place its validation rules are written.

:data:`FIELDS` is the contract as data: for each field of the record map, the
Python types msgpack may give it, whether it is required, its length limits or
numeric range, and whether a delete skips it. Two readers derive everything
from the table, and no other code states a rule:

- :func:`first_violation` is the per-record meaning: the first field, in table
  order, that breaks its rule gives the rejection reason and detail (what the
  dead-letter headers carry);
- :mod:`state.fastdecode` applies each rule to a whole column at once and sends
  only the records a column test doubts through :func:`first_violation`.

A column test may doubt a good record (it is accepted after all), never pass a
bad one; ``tests/state/test_events.py`` checks that against
:func:`first_violation` on every record of random batches.

    >>> window = (631152000.0, 2e9)
    >>> first_violation({"user_id": 7, "action": "view", "ts": 1.7e9, "categories": ["a"]}, window) is None
    True
    >>> first_violation({"user_id": 7, "action": "view", "ts": 1.7e9, "value": float("inf")}, window)
    ('non_finite', 'value=inf')
    >>> first_violation({"user_id": 7, "action": "delete", "ts": 1.7e9, "value": "x"}, window) is None
    True

(a delete names the user only: the behaviour fields are not checked.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldRule", "FIELDS", "DELETE_ACTION", "STRING", "NUMBER", "STRING_LIST", "violation", "first_violation",
           "is_delete", "EXACT_INT"]

#: Action that erases a user (right to erasure); handled by the pipeline, not counted as behaviour.
DELETE_ACTION = "delete"

#: Rule kinds (how a field is checked; the limits come from its :class:`FieldRule`).
STRING = "string"  # one of ``types``; a str has 1..max_len chars (an id, an action name)
NUMBER = "number"  # int or float, finite, |x| <= max_abs (and inside the event-time window for ``event_time``)
STRING_LIST = "string_list"  # a list of at most max_len str of at most max_entry_len chars each (empty allowed)

#: Ints whose magnitude reaches this are not exact as float64; an event time must be exact.
EXACT_INT = 2**53


@dataclass(frozen=True)
class FieldRule:
    """The rule of one field (an absent field and an explicit nil are the same)."""

    name: str
    kind: str
    types: tuple[type, ...]  # accepted Python types after msgpack decoding (exact types: a bool is no int)
    required: bool = False
    max_len: int = 0  # STRING: chars of a str; STRING_LIST: entries
    max_entry_len: int = 0  # STRING_LIST: chars of each entry
    max_abs: float = math.inf  # NUMBER: larger magnitudes are rejected as non-finite (float32 range for values)
    event_time: bool = False  # NUMBER: epoch seconds inside the decoder's [min_ts, max_ts], ints exact
    behaviour: bool = False  # only behaviour events are held to it: a delete skips it
    expected: str = ""  # how rejection details name the accepted types (default: the types' names)

    @property
    def label(self) -> str:
        return self.expected or " or ".join(t.__name__ for t in self.types)


#: The contract, in the order records are checked (the first broken rule names the reason).
FIELDS: tuple[FieldRule, ...] = (
    FieldRule("user_id", STRING, (str, int), required=True, max_len=256),
    FieldRule("action", STRING, (str,), required=True, max_len=64),
    FieldRule("ts", NUMBER, (int, float), required=True, event_time=True),
    FieldRule("event_id", STRING, (str, int), max_len=256),
    FieldRule("item_id", STRING, (str, int), max_len=256, behaviour=True),
    FieldRule("value", NUMBER, (float, int), max_abs=3.0e38, behaviour=True, expected="float"),
    FieldRule("categories", STRING_LIST, (list,), max_len=64, max_entry_len=256, behaviour=True),
)


def violation(rule: FieldRule, v: Any, window: tuple[float, float]) -> tuple[str, str] | None:
    """(reason, detail) when ``v`` breaks ``rule``, else None; ``window``: accepted event times."""
    name = rule.name
    if v is None:
        return ("missing_field", name) if rule.required else None
    t = type(v)
    if t not in rule.types:
        return "bad_type", f"{name}: expected {rule.label}, got {t.__name__}"
    if rule.kind == STRING:
        if t is str and not 0 < len(v) <= rule.max_len:
            return "bad_value", f"{name}: empty or longer than {rule.max_len} chars"
        return None
    if rule.kind == NUMBER:
        x = v
        if t is int:
            if rule.event_time and not -EXACT_INT < v < EXACT_INT:
                return "ts_out_of_range", f"{name}={v}"
            try:
                x = float(v)
            except OverflowError:
                return "bad_value", f"{name}: integer too large"
        if not math.isfinite(x) or abs(x) > rule.max_abs:
            return "non_finite", f"{name}={v}"
        if rule.event_time and not window[0] <= x <= window[1]:
            return "ts_out_of_range", f"{name}={x} outside [{window[0]:.0f}, {window[1]:.0f}]"
        return None
    if len(v) > rule.max_len:  # STRING_LIST
        return "bad_value", f"{name}: {len(v)} entries > {rule.max_len}"
    for c in v:
        if type(c) is not str:
            return "bad_type", f"{name}: expected str entries, got {type(c).__name__}"
        if len(c) > rule.max_entry_len:
            return "bad_value", f"{name}: entry longer than {rule.max_entry_len} chars"
    return None


def is_delete(obj: dict) -> bool:
    action = obj.get("action")
    return type(action) is str and action == DELETE_ACTION


def first_violation(obj: Any, window: tuple[float, float]) -> tuple[str, str] | None:
    """(reason, detail) of the first rule a decoded record breaks, or None when it is a valid event
    (a delete when :func:`is_delete`)."""
    if type(obj) is not dict:
        return "not_a_map", f"expected a map, got {type(obj).__name__}"
    delete = is_delete(obj)
    for rule in FIELDS:
        if delete and rule.behaviour:
            continue
        bad = violation(rule, obj.get(rule.name), window)
        if bad is not None:
            return bad
    return None
