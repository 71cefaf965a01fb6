"""The contract's rules over records in offset order, without a broker (stream/client/index.py)."""

from __future__ import annotations

import msgpack

from stream.client import Outcome, SegmentIndex
from stream.contracts.user_segments import decode_segment_event


def value(user: str, segment: int, seq: int, cid: str | None = None, *, prev: int | None = None) -> bytes:
    msg = {"schema": 1, "user_id": user, "segment": segment, "previous_segment": prev, "event_time": 1.7e9 + seq,
           "emitted_at": 1.7e9 + seq + 0.5, "model_version": 2, "distance": 0.25, "seq": seq}
    if cid is not None:
        msg["change_id"] = cid
    return msgpack.packb(msg)


def test_values_of_the_tests_pass_the_contract_check():
    assert decode_segment_event(value("u1", 3, 1, "c"))["seq"] == 1


def test_last_value_per_key_wins_and_sizes_follow():
    ix = SegmentIndex()
    for off, (user, seg, seq) in enumerate([("a", 1, 1), ("b", 1, 1), ("a", 2, 2), ("c", 2, 1), ("a", 3, 3)]):
        assert ix.apply(user.encode(), value(user, seg, seq, f"{user}{seq}"), 0, off) == Outcome.APPLIED
    assert len(ix) == 3 and ix.sizes() == {1: 1, 2: 1, 3: 1}
    a = ix.get("a")
    assert (a.segment, a.seq, a.model_version, a.change_id, a.partition, a.offset) == (3, 3, 2, "a3", 0, 4)
    assert ix.get("zz") is None and "a" in ix and "zz" not in ix
    assert ix.stats.applied == 5 and ix.stats.seq_gaps == 0


def test_a_resent_change_is_a_duplicate_and_an_older_other_change_is_stale():
    ix = SegmentIndex()
    ix.apply(b"u", value("u", 1, 1, "x1"), 0, 0)
    ix.apply(b"u", value("u", 2, 2, "x2"), 0, 1)
    # a producer crash re-sends both changes, same seq, same change ids
    assert ix.apply(b"u", value("u", 1, 1, "x1"), 0, 2) == Outcome.DUPLICATE
    assert ix.apply(b"u", value("u", 2, 2, "x2"), 0, 3) == Outcome.DUPLICATE
    # a different change with an old seq: out of order, not a re-send
    assert ix.apply(b"u", value("u", 7, 2, "other"), 0, 4) == Outcome.STALE
    assert ix.apply(b"u", value("u", 7, 1), 0, 5) == Outcome.STALE
    assert ix.apply(b"u", value("u", 2, 2), 0, 6) == Outcome.DUPLICATE  # no change id: same seq and segment
    assert (ix.get("u").segment, ix.get("u").offset) == (2, 1)
    s = ix.stats
    assert (s.records, s.applied, s.duplicates, s.stale) == (7, 2, 3, 2)


def test_duplicates_older_than_the_window_are_counted_as_stale():
    ix = SegmentIndex(duplicate_window=1)
    for seq in (1, 2, 3):
        ix.apply(b"u", value("u", seq, seq, f"c{seq}"), 0, seq)
    assert ix.apply(b"u", value("u", 2, 2, "c2"), 0, 9) == Outcome.STALE  # c2 left the window
    assert ix.apply(b"u", value("u", 3, 3, "c3"), 0, 10) == Outcome.DUPLICATE  # the held one


def test_a_tombstone_removes_the_user_and_a_returning_user_starts_again():
    ix = SegmentIndex()
    ix.apply(b"u", value("u", 4, 5, "a"), 1, 0)
    assert ix.apply(b"u", None, 1, 1) == Outcome.REMOVED
    assert ix.get("u") is None and len(ix) == 0 and ix.sizes() == {}
    assert ix.apply(b"u", value("u", 6, 1, "b"), 1, 2) == Outcome.APPLIED  # seq restarts after an erasure
    assert ix.get("u").segment == 6 and len(ix) == 1
    assert ix.apply(b"nobody", None, 1, 3) == Outcome.REMOVED  # erasing a user never seen is still an erasure
    assert len(ix) == 1


def test_records_that_break_the_contract_are_counted_and_skipped(caplog):
    ix = SegmentIndex()
    assert ix.apply(None, value("u", 1, 1), 0, 0) == Outcome.INVALID
    assert ix.apply(b"u", b"\xc1 not msgpack", 0, 1) == Outcome.INVALID
    assert ix.apply(b"u", msgpack.packb({"schema": 1, "user_id": "u"}), 0, 2) == Outcome.INVALID
    assert ix.apply(b"v", value("u", 1, 1), 0, 3) == Outcome.INVALID  # the key is not the value's user
    assert ix.apply(b"\xff", None, 0, 4) == Outcome.INVALID
    assert ix.stats.invalid == 5 and len(ix) == 0 and ix.cursor == {0: 5}
    assert sum("breaks the contract" in r.getMessage() for r in caplog.records) == 1  # the first, then every 1000th


def test_a_seq_that_skips_numbers_is_applied_and_counted():
    ix = SegmentIndex()
    ix.apply(b"u", value("u", 1, 1, "a"), 0, 0)
    assert ix.apply(b"u", value("u", 2, 4, "b"), 0, 1) == Outcome.APPLIED
    assert ix.stats.seq_gaps == 1


def test_changes_since_a_cursor_across_partitions():
    ix = SegmentIndex()
    ix.apply(b"a", value("a", 1, 1, "a1"), 0, 0)
    ix.apply(b"b", value("b", 1, 1, "b1"), 1, 0)
    ix.apply(b"c", value("c", 1, 1, "c1"), 1, 1)
    mark = ix.cursor
    assert mark == {0: 1, 1: 2}
    assert ix.changes_since(mark).updated == [] and ix.changes_since(mark).cursor == mark
    ix.apply(b"b", value("b", 2, 2, "b2"), 1, 2)
    ix.apply(b"d", value("d", 2, 1, "d1"), 2, 0)  # a partition the cursor does not know: from offset 0
    ix.apply(b"a", value("a", 3, 2, "a2"), 0, 1)
    ix.apply(b"c", None, 1, 3)
    ix.apply(b"a", value("a", 3, 2, "a2"), 0, 2)  # a duplicate is not a change
    got = ix.changes_since(mark)
    assert [(i.user_id, i.segment) for i in got.updated] == [("b", 2), ("d", 2), ("a", 3)]
    assert got.removed == ["c"]
    assert got.cursor == {0: 3, 1: 4, 2: 1}
    assert ix.changes_since(got.cursor).updated == [] and ix.changes_since(got.cursor).removed == []
    everything = ix.changes_since(None)
    assert sorted(i.user_id for i in everything.updated) == ["a", "b", "d"] and everything.removed == ["c"]
