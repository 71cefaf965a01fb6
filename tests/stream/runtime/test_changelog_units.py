"""The changelog's restore rules, in-process: the last marker ends the state, the last record per key
before it wins, records of a checkpoint a crash cut short are ignored (and stay ignored once a later
marker names them void), an evicted user's tail and an erasure's tombstone come back as such."""

from __future__ import annotations

import numpy as np

from state.features import FeatureSpec
from state.user_store import UserStore
from stream.kafka.records import Records
from stream.runtime.changelog import FULL, MARKER_KEY, TAIL, TAIL_DTYPE, decode_partition, row_dtype
from stream.runtime.checkpoints import pack

DTYPE = row_dtype(UserStore(FeatureSpec(), capacity=1))


def _full(seq: int, segment: int) -> bytes:
    row = np.zeros(1, dtype=DTYPE)
    row["seq"], row["segment"], row["t0"] = seq, segment, 1.7e9
    return FULL + row.tobytes()


def _tail(seq: int, segment: int) -> bytes:
    return TAIL + np.array([(seq, segment, b"\x01" * 16)], dtype=TAIL_DTYPE).tobytes()


def _marker(offset: int, void=()) -> bytes:
    return pack({"v": 1, "offset": offset, "ck": offset, "void": [list(v) for v in void], "stale": []})


def _decode(records: list[tuple[bytes, bytes | None]]):
    keys = [k for k, _ in records]
    return decode_partition(3, Records.single("cl", 3, np.arange(len(records)), np.zeros(len(records)), keys,
                                              [v for _, v in records]), len(records), DTYPE)


def test_the_last_marker_ends_the_state_and_the_last_record_per_key_wins():
    st = _decode([(b"a", _full(1, 0)), (b"b", _full(1, 2)), (MARKER_KEY, _marker(100)),
                  (b"a", _full(2, 1)), (b"c", _tail(4, 5)), (b"b", None), (MARKER_KEY, _marker(200)),
                  (b"a", _full(9, 9))])  # after the last marker: a checkpoint cut short
    assert st.offset == 200 and st.marker_at == 6
    assert st.users["ids"] == ["a"] and st.users["seq"].tolist() == [2] and st.users["segment"].tolist() == [1]
    assert st.tails == {"c": (4, 5, b"\x01" * 16, 3)}  # b was erased: gone


def test_a_cut_short_checkpoint_stays_ignored_behind_a_later_marker_that_names_it_void():
    st = _decode([(b"a", _full(1, 0)), (MARKER_KEY, _marker(100)),
                  (b"a", _full(5, 3)),  # offset 2: written, never sealed (the writer was killed)
                  (b"b", _full(1, 1)), (MARKER_KEY, _marker(150, void=[(2, 3)]))])
    assert st.offset == 150
    assert dict(zip(st.users["ids"], st.users["seq"].tolist())) == {"a": 1, "b": 1}


def test_no_marker_means_no_checkpoint():
    st = _decode([(b"a", _full(1, 0))])
    assert st.offset is None and st.users is None
