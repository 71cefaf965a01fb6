"""IdIndex against a dict: the same answers through random inserts, deletes, lookups and rebuilds."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from state.id_index import IdIndex


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "delete", "pop"]), st.lists(st.integers(0, 300), max_size=40)),
                max_size=30), st.integers(8, 64))
def test_answers_like_a_dict(ops, slots):
    ids: list[str | None] = [None] * 400
    free = list(range(400))
    index, want = IdIndex(ids, slots=slots), {}
    for op, users in ops:
        names = list(dict.fromkeys(f"user-{u}" for u in users))
        if op == "insert":
            new = [u for u in names if u not in want]
            rows = [free.pop() for _ in new]
            for u, r in zip(new, rows):
                ids[r] = u
                want[u] = r
            index.insert_many(new, rows)
        elif op == "delete":
            index.delete_many(names)
            for u in names:
                if u in want:
                    free.append(want.pop(u))
                    ids[free[-1]] = None
        else:
            for u in names:
                got = index.pop(u)
                assert got == want.get(u)
                if u in want:
                    free.append(want.pop(u))
                    ids[free[-1]] = None
        probe = names + [f"user-{u}" for u in range(0, 301, 7)]
        assert index.get_many(probe).tolist() == [want.get(u, -1) for u in probe]
        assert len(index) == len(want) and sorted(index) == sorted(want)
        assert sorted(index.values()) == sorted(want.values())


def test_many_ids_take_under_twelve_bytes_each_and_survive_churn():
    n = 200_000
    ids: list[str | None] = [f"u{i}" for i in range(n)]
    index = IdIndex(ids)
    for start in range(0, n, 10_000):  # batches, as the store inserts them
        index.insert_many(ids[start:start + 10_000], np.arange(start, start + 10_000))
    assert index.nbytes() / n < 12
    rng = random.Random(1)
    sample = rng.sample(range(n), 2000)
    assert index.get_many([f"u{i}" for i in sample]).tolist() == sample
    # evict 10% and refill those rows with new ids, three times: deleted slots are reclaimed by rebuilds
    for round_ in range(3):
        rows = rng.sample(range(n), n // 10)
        index.delete_many([ids[r] for r in rows])
        for r in rows:
            ids[r] = f"u{r}-{round_}"
        index.insert_many([ids[r] for r in rows], rows)
    assert len(index) == n and index.nbytes() / n < 12
    assert index.get_many([ids[r] for r in sample]).tolist() == sample
    assert index.get("u-nobody") is None
