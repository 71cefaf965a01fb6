"""IdColumn against a list of ids: the same answers for every kind of id, including those it keeps outside."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from state.id_column import INLINE_MAX, IdColumn
from state.id_index import IdIndex

# short and long, empty, trailing and inner NULs, non-ASCII: what a NUL-padded column gets wrong if careless
_IDS = st.one_of(st.binary(min_size=0, max_size=12), st.binary(min_size=INLINE_MAX - 2, max_size=INLINE_MAX + 3),
                 st.sampled_from([b"", b"\x00", b"a\x00", b"a\x00b", b"a", "é".encode(), b"x" * 200]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "clear"]), st.lists(st.tuples(st.integers(0, 29), _IDS),
                                                                       max_size=8)), max_size=20))
def test_answers_like_a_list(ops):
    col, want = IdColumn(30), [None] * 30
    for op, pairs in ops:
        pairs = list(dict(pairs).items())  # one id per row per step
        rows, uids = [r for r, _ in pairs], [u for _, u in pairs]
        if op == "set":
            col.set_many(rows, uids)
            for r, u in pairs:
                want[r] = u
        else:
            col.clear_many(rows)
            for r in rows:
                want[r] = None
        assert [col[r] for r in range(30)] == want
        assert col.free(30).tolist() == [w is None for w in want]
        held = [r for r in range(30) if want[r] is not None]
        assert col.take(held) == [want[r] for r in held]
        probe_rows = np.array([r for r in range(30) for _ in range(2)])
        probes = [u for r in range(30) for u in ((want[r] or b"q"), (want[(r + 1) % 30] or b""))]
        assert col.equal(probe_rows, probes).tolist() == [want[r] == u for r, u in zip(probe_rows.tolist(), probes)]


def test_ids_of_one_length_cost_their_length_and_an_odd_one_does_not_widen_the_column():
    n = 10_000
    col = IdColumn(n)
    col.set_many(range(n), [f"user-{i:09d}".encode() for i in range(n)])
    assert col.width == 14 and col.nbytes() == 14 * n
    col.set_many([7], [b"z" * 500])
    assert col.width == 14 and col[7] == b"z" * 500 and col[8] == b"user-000000008"


def test_an_index_over_a_column_finds_what_a_list_would():
    col = IdColumn(8)
    index = IdIndex(col)
    uids = [b"a", b"", b"a\x00", b"b" * 100, b"ab"]
    col.set_many(range(5), uids)
    index.insert_many(uids, range(5))
    assert index.get_many(uids + [b"a\x00\x00", b"b" * 99, b"abc"]).tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
    assert sorted(index) == sorted(uids)
