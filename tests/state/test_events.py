"""Input contract v1: every record is either a valid event or a rejection with a reason."""

from __future__ import annotations

import math

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from state.features import FeatureSpec
from state.events import REASONS, EventBatch, EventDecoder

DEC = EventDecoder(FeatureSpec(), now=lambda: 1.8e9)


def reason_of(obj):
    batch, rejected = DEC.decode_records([msgpack.packb(obj)])
    return rejected[0].reason if rejected else None


def test_valid_event_columns():
    raw = msgpack.packb({"user_id": 42, "action": "add_to_cart", "ts": 1_700_000_000, "item_id": "sku-1",
                         "categories": ["shoes", "sale"], "value": 19, "extra": {"ignored": True}})
    batch, rejected = DEC.decode_records([raw])
    assert rejected == []
    assert batch.user_ids == ["42"]
    assert batch.actions.tolist() == [FeatureSpec().action_index("add_to_cart")]
    assert batch.ts.tolist() == [1.7e9] and batch.values.tolist() == [19.0]
    assert batch.cat_event.tolist() == [0, 0]


def test_unknown_actions_go_to_other():
    batch, _ = DEC.decode_objects([{"user_id": "u", "action": "wishlist", "ts": 1.7e9}])
    assert batch.actions.tolist() == [FeatureSpec().other_action]


def test_reasons():
    assert reason_of({"action": "view", "ts": 1.7e9}) == "missing_field"
    assert reason_of({"user_id": True, "action": "view", "ts": 1.7e9}) == "bad_type"
    assert reason_of({"user_id": "u", "action": "view", "ts": math.nan}) == "non_finite"
    assert reason_of({"user_id": "u", "action": "view", "ts": 1.7e9, "value": math.inf}) == "non_finite"
    assert reason_of({"user_id": "u", "action": "view", "ts": 2**62}) == "ts_out_of_range"
    assert reason_of({"user_id": "u", "action": "view", "ts": 1.9e9}) == "ts_out_of_range"  # > now + 1 day
    assert reason_of({"user_id": "u" * 300, "action": "view", "ts": 1.7e9}) == "bad_value"
    assert reason_of({"user_id": "u", "action": "view", "ts": 1.7e9, "categories": [1]}) == "bad_type"
    assert reason_of({"user_id": "u", "action": "view", "ts": 1.7e9, "item_id": 1.5}) == "bad_type"
    assert reason_of([1, 2]) == "not_a_map"
    _, rej = DEC.decode_records([b"\x81\xa1", None, b"\x80" * 70_000])
    assert [r.reason for r in rej] == ["undecodable", "null_value", "oversized"]


def test_delete_is_not_behaviour():
    batch, rej = DEC.decode_objects([{"user_id": "u", "action": "delete", "ts": 1.7e9}])
    assert len(batch) == 0 and batch.deletes == [(0, "u")] and rej == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(raw):
    batch, rejected = DEC.decode_records([raw])
    assert len(batch) + len(rejected) + len(batch.deletes) == 1
    assert all(r.reason in REASONS for r in rejected)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["user_id", "action", "ts", "item_id", "categories", "value", "x"]), json_like))
def test_random_maps_never_raise(obj):
    batch, rejected = DEC.decode_records([msgpack.packb(obj)])
    assert len(batch) + len(rejected) + len(batch.deletes) == 1


def test_replayed_objects_that_msgpack_cannot_hold_are_still_rejected():
    batch, rejected = DEC.decode_objects([{"user_id": "u", "action": "view", "ts": 2**80}])
    assert rejected[0].reason == "ts_out_of_range" and rejected[0].raw


# --- the column-at-a-time path must agree with the contract's per-record rules --------------------
def _reference(objs):
    """Each record judged on its own by :func:`first_violation`, its columns built one by one."""
    from state.event_contract import first_violation, is_delete
    from state.events import Rejected, _repack

    spec, window = DEC.spec, (DEC.min_ts, DEC.now() + DEC.max_clock_skew_s)
    rows, deletes, rejected, cat_event, cat_bucket = [], [], [], [], []
    for i, obj in enumerate(objs):
        bad = first_violation(obj, window)
        if bad is not None:
            rejected.append(Rejected(i, *bad, _repack(obj)))
        elif is_delete(obj):
            deletes.append((i, str(obj["user_id"])))
        else:
            for c in obj.get("categories") or []:
                cat_event.append(len(rows))
                cat_bucket.append(spec.category_bucket(c))
            item, value, event_id = obj.get("item_id"), obj.get("value"), obj.get("event_id")
            rows.append((str(obj["user_id"]), spec.action_index(obj["action"]), float(obj["ts"]),
                         -1 if item is None else spec.item_token(item), math.nan if value is None else float(value),
                         i, None if event_id is None else str(event_id)))
    users, actions, ts, items, values, source, event_ids = zip(*rows) if rows else ([],) * 7
    return EventBatch(list(users), np.array(actions, np.int16), np.array(ts, np.float64), np.array(items, np.int64),
                      np.array(values, np.float32), np.array(cat_event, np.int32), np.array(cat_bucket, np.int32),
                      np.array(source, np.int64), list(event_ids), deletes), rejected


field_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan, 1e39, 1.7e9, 1_700_000_000, 1.79e9, 5.0, "view"]),
    st.text(max_size=5), st.text(min_size=255, max_size=258),
    st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3),
    st.sampled_from(["view", "click", "delete", "wishlist", "", ["a", "b"], []]),
)
good_event = st.fixed_dictionaries(
    {"user_id": st.one_of(st.integers(0, 50), st.sampled_from(["a", "b", "c"])), "action": st.sampled_from(["view", "rate", "x"]),
     "ts": st.floats(1.6e9, 1.75e9)},
    optional={"item_id": st.one_of(st.integers(0, 9), st.text(min_size=1, max_size=3)),
              "value": st.floats(-5, 5), "categories": st.lists(st.text(max_size=3), max_size=3),
              "event_id": st.integers(0, 99)})
mutated_event = st.builds(lambda ev, k, v: {**ev, k: v}, good_event,
                          st.sampled_from(["user_id", "action", "ts", "item_id", "categories", "value", "event_id"]),
                          field_values)
dropped_field = st.builds(lambda ev, k: {f: v for f, v in ev.items() if f != k}, good_event,
                          st.sampled_from(["user_id", "action", "ts"]))
any_event = st.one_of(good_event, mutated_event, mutated_event, dropped_field, st.dictionaries(
    st.sampled_from(["user_id", "action", "ts", "item_id", "categories", "value", "event_id"]), field_values),
    st.integers(), st.lists(st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.lists(any_event, max_size=30))
def test_column_checks_agree_with_per_record_rules(objs):
    fast, fast_rej = DEC.decode_objects(objs)
    ref, ref_rej = _reference(objs)
    assert [(r.index, r.reason, r.detail) for r in fast_rej] == [(r.index, r.reason, r.detail) for r in ref_rej]
    assert fast.user_ids == ref.user_ids
    assert (fast.event_ids or [None] * len(fast)) == (ref.event_ids or [None] * len(ref))
    assert fast.deletes == ref.deletes
    for name in ("actions", "ts", "item_tokens", "values", "cat_event", "cat_bucket", "source_index"):
        a, b = getattr(fast, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.tolist() == b.tolist() or (name == "values" and
                                                                  np.array_equal(a, b, equal_nan=True)), name


def test_column_checks_keep_good_records_around_bad_ones():
    objs = [{"user_id": "a", "action": "view", "ts": 1.7e9, "categories": ["x"]}, {"user_id": None},
            {"user_id": 5, "action": "delete", "ts": 1.7e9}, {"user_id": "b", "action": "view", "ts": 1.7e9,
                                                               "value": math.nan}, {"user_id": "c", "action": "rate", "ts": 1.7e9, "categories": ["y", "z"]}]
    batch, rej = DEC.decode_objects(objs)
    assert batch.user_ids == ["a", "c"] and batch.source_index.tolist() == [0, 4]
    assert batch.cat_event.tolist() == [0, 1, 1]
    assert [(r.index, r.reason) for r in rej] == [(1, "missing_field"), (3, "non_finite")]
    assert batch.deletes == [(2, "5")]
