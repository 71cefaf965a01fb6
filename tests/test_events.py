"""Input contract v1: every record is either a valid event or a rejection with a reason."""

from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from state.features import FeatureSpec
from stream.events import REASONS, EventDecoder

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
