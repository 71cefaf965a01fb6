"""Label bounds across model versions: a label they certify is the one the model gives, and they
certify most labels when the centroids move little."""

from __future__ import annotations

import numpy as np
import pytest

from state.relabel import LabelBounds
from state.segments import SegmentModel, assign, assign_bounds


def _versions(rng: np.random.Generator, k: int, dim: int, n_versions: int, step: float):
    """Model versions whose centroids drift by ``step``; version 3 adds a centroid, version 5 ends one."""
    c = rng.normal(size=(k, dim)).astype(np.float32) * 3
    ids = np.arange(k)
    out = [SegmentModel(1, c.copy(), ids.copy(), 0.0)]
    next_id = k
    for v in range(2, n_versions + 2):
        c = c + rng.normal(scale=step, size=c.shape).astype(np.float32)
        if v == 3:
            c = np.concatenate([c, rng.normal(size=(1, dim)).astype(np.float32) * 3])
            ids = np.append(ids, next_id)
            next_id += 1
        if v == 5:
            c, ids = c[1:], ids[1:]
        out.append(SegmentModel(v, c.copy(), ids.copy(), 0.0))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_every_label_the_bounds_certify_is_the_one_the_model_gives(seed):
    rng = np.random.default_rng(seed)
    models = _versions(rng, k=6, dim=4, n_versions=8, step=0.15)
    x = (rng.normal(size=(3000, 4)) * 3).astype(np.float32)
    margin = 0.05
    seg, dist, other = assign_bounds(models[0], x, np.full(len(x), -1), margin)
    bounds = LabelBounds()
    bounds.set_exact(np.arange(len(x)), dist, other, models[0])
    for prev, model in zip(models, models[1:]):
        todo = bounds.on_publish(prev, model, seg, margin)  # nobody is re-assigned: the bounds only widen
        certified = np.ones(len(x), dtype=bool)
        certified[todo] = False
        want, _ = assign(model, x, seg, margin)
        assert (want[certified] == seg[certified]).all(), model.version
        assert len(set(todo.tolist())) == len(todo)
        # the users of an ended segment come first
        ended = np.flatnonzero(model.index_of(seg) < 0)
        assert set(todo[: len(ended)].tolist()) == set(ended.tolist())


def _four_blobs(seed: int):
    """4,000 points around four centres, labelled by version 1 of those centres, with exact bounds (and the rng, to go on drawing)."""
    rng = np.random.default_rng(seed)
    c = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    x = (c[rng.integers(0, 4, 4000)] + rng.normal(size=(4000, 2))).astype(np.float32)
    m1 = SegmentModel(1, c, np.arange(4), 0.0)
    seg, dist, other = assign_bounds(m1, x, np.full(len(x), -1), 0.05)
    b = LabelBounds()
    b.set_exact(np.arange(len(x)), dist, other, m1)
    return rng, c, x, m1, seg, b


def test_small_moves_leave_most_labels_certified_and_reassigned_users_become_certified_again():
    _, c, x, m1, seg, b = _four_blobs(7)
    m2 = SegmentModel(2, c + np.float32(0.1), np.arange(4), 0.0)
    todo = b.on_publish(m1, m2, seg, 0.05)
    assert len(todo) < 0.05 * len(x)
    seg2, dist2, other2 = assign_bounds(m2, x[todo], seg[todo], 0.05)
    b.set_exact(todo, dist2, other2, m2)
    seg[todo] = seg2
    assert len(b.on_publish(m2, SegmentModel(3, m2.centroids, np.arange(4), 0.0), seg, 0.05)) == 0


def test_a_partial_order_keeps_the_most_urgent_first_and_loses_no_row():
    rng = np.random.default_rng(3)
    models = _versions(rng, k=6, dim=4, n_versions=3, step=0.3)
    x = (rng.normal(size=(5000, 4)) * 3).astype(np.float32)
    seg, dist, other = assign_bounds(models[0], x, np.full(len(x), -1), 0.05)
    full, part = LabelBounds(), LabelBounds()
    for b in (full, part):
        b.set_exact(np.arange(len(x)), dist, other, models[0])
    a = full.on_publish(models[0], models[1], seg, 0.05)
    b = part.on_publish(models[0], models[1], seg, 0.05, ordered=100)
    assert len(a) > 200 and sorted(a.tolist()) == sorted(b.tolist())
    assert set(a[:100].tolist()) == set(b[:100].tolist())


def test_centres_that_jitter_in_place_leave_labels_certified_over_hundreds_of_versions():
    # a version per micro-batch at a million users: most users go hundreds of versions between
    # re-assignments. Summing every version's move certified ~1% of them; measuring from the anchor
    # does not add up jitter (200 versions: more than LabelBounds.ANCHORS, so anchors are also moved)
    rng, c, x, prev, seg, b = _four_blobs(11)
    assert 200 > LabelBounds.ANCHORS
    for v in range(2, 202):
        model = SegmentModel(v, c + rng.normal(scale=0.2, size=c.shape).astype(np.float32), np.arange(4), 0.0)
        todo = b.on_publish(prev, model, seg, 0.05)
        certified = np.ones(len(x), dtype=bool)
        certified[todo] = False
        want, _ = assign(model, x, seg, 0.05)
        assert (want[certified] == seg[certified]).all(), v
        assert certified.mean() > 0.9, (v, certified.mean())
        # the queue's head is re-assigned, as the pipeline would (a bounded number per version)
        r = todo[:50]
        seg[r], d2, o2 = assign_bounds(model, x[r], seg[r], 0.05)
        b.set_exact(r, d2, o2, model)
        prev = model


def test_float16_bounds_stay_bounds_and_certify_nothing_exact_float32_bounds_would_not():
    # upper rounds up, lower down, so the stored pair is never tighter than the measured one; far
    # distances (past float16's range) leave the label uncertified instead of wrapping
    rng = np.random.default_rng(3)
    upper = np.abs(rng.normal(size=5000)).astype(np.float32) * rng.choice([1e-3, 1.0, 100.0, 1e5], 5000).astype(np.float32)
    lower = upper * rng.uniform(0.9, 1.1, 5000).astype(np.float32)
    model = SegmentModel(1, np.zeros((2, 2), np.float32), np.arange(2), 0.0)
    b = LabelBounds()
    rows = np.arange(5000)
    b.set_exact(rows, upper, lower, model)
    assert b.upper.dtype == np.float16 and b.nbytes() == 5 * 5000
    assert (b.upper.astype(np.float32) >= upper).all() and (b.lower.astype(np.float32) <= lower).all()
    margin = np.float32(0.05)
    stored = b.lower.astype(np.float32) >= b.upper.astype(np.float32) * (1 - margin)
    exact = lower >= upper * (1 - margin)
    assert not (stored & ~exact).any()
    far = upper > 65504
    assert not stored[far].any() and exact[far].any()
    assert stored[~far].sum() > 0.99 * exact[~far].sum()  # the rounding costs next to no certified labels


def test_per_row_arrays_grow_no_further_than_the_store_capacity():
    model = SegmentModel(1, np.zeros((2, 2), np.float32), np.arange(2), 0.0)
    capped, free = LabelBounds(capacity=1500), LabelBounds()
    for b in (capped, free):
        for top in (1000, 1200, 1500):
            b.set_exact(np.arange(top), np.ones(top, np.float32), np.ones(top, np.float32), model)
    assert len(capped.upper) == 1500 and len(free.upper) == 2000
