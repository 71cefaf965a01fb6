"""The global model's merge: weighted k-means over the members' summaries (:mod:`state.global_model`).

A summary is a set of weighted points (one member's local centres, each with a decayed count of the
embeddings nearest to it); the leader clusters the union of every member's points into the model's
``k`` segments. Small inputs (a few dozen points), so float64 and plain loops over restarts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cluster_summaries"]


def _d2(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """[n, k] squared distances in float64 (summaries are small: precision over speed)."""
    return np.maximum((x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :], 0.0)


def _lloyd(x: np.ndarray, w: np.ndarray, c: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weighted Lloyd iterations from ``c``; a centre with no weight keeps its place."""
    c = c.copy()
    prev = None
    for _ in range(iterations):
        lab = _d2(x, c).argmin(1)
        if prev is not None and np.array_equal(lab, prev):
            break
        prev = lab
        wt = np.bincount(lab, weights=w, minlength=len(c))
        sums = np.zeros_like(c)
        np.add.at(sums, lab, x * w[:, None])
        live = wt > 0
        c[live] = sums[live] / wt[live, None]
    return c


def _inertia(x: np.ndarray, w: np.ndarray, c: np.ndarray) -> float:
    return float((w * _d2(x, c).min(1)).sum())


def _plus_plus(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Weighted k-means++ seeding: a point is drawn in proportion to its weight times its squared distance."""
    p = w / w.sum()
    centres = [x[rng.choice(len(x), p=p)]]
    d2 = _d2(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        mass = w * d2
        total = float(mass.sum())
        i = int(rng.choice(len(x), p=mass / total)) if total > 0 else int(rng.choice(len(x), p=p))
        centres.append(x[i])
        d2 = np.minimum(d2, _d2(x, x[i][None])[:, 0])
    return np.array(centres)


def _reseed_dead(x: np.ndarray, w: np.ndarray, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A centre no summary point is nearest to takes half of the segment with the largest weighted error
    (a weighted 2-means of that segment's points); repeated while one is left and a segment can be split."""
    c = c.copy()
    for _ in range(len(c)):
        lab = _d2(x, c).argmin(1)
        wt = np.bincount(lab, weights=w, minlength=len(c))
        dead = np.flatnonzero(wt <= 0)
        if len(dead) == 0:
            break
        err = np.bincount(lab, weights=w * _d2(x, c)[np.arange(len(x)), lab], minlength=len(c))
        big = int(err.argmax())
        members = lab == big
        if err[big] <= 0 or members.sum() < 2:
            break
        halves = _lloyd(x[members], w[members], _plus_plus(x[members], w[members], 2, rng))
        c[big], c[dead[0]] = halves[0], halves[1]
        c = _lloyd(x, w, c)
    return c


def cluster_summaries(points: np.ndarray, weights: np.ndarray, k: int, *, init: np.ndarray | None = None,
                      rng: np.random.Generator, restarts: int = 8, restart_gain: float = 0.02) -> np.ndarray:
    """``k`` centres of weighted summary points (every member's local centres and their counts): the merge.

    From ``init`` (the current version's centroids) by weighted Lloyd, dead centres re-seeded; and from
    ``restarts`` weighted k-means++ seeds. A restart replaces the seeded result only when its weighted
    inertia is lower by ``restart_gain`` (relative), so ids do not churn for nothing; without ``init``
    the best restart is taken. Deterministic for a given ``rng`` seed. Points of weight 0 are ignored.

    Two members whose partitions hold different groups (3 groups each, k = 6): every group keeps a
    segment of its own, where one-to-one averaging of the members' centres paired unrelated groups.

    >>> rng = np.random.default_rng(0)
    >>> groups = np.eye(6) * 10
    >>> a = groups[:3].repeat(2, 0) + rng.normal(0, 0.1, (6, 6))   # member a: 6 centres over groups 0-2
    >>> b = groups[3:].repeat(2, 0) + rng.normal(0, 0.1, (6, 6))   # member b: 6 centres over groups 3-5
    >>> c = cluster_summaries(np.vstack([a, b]), np.ones(12), 6, init=a, rng=np.random.default_rng(1))
    >>> sorted(_d2(c, groups).argmin(1).tolist())              # one centre per group
    [0, 1, 2, 3, 4, 5]
    """
    x = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    x, w = x[keep], w[keep]
    if len(x) == 0:
        if init is None:
            raise ValueError("no weighted summary point to cluster")
        return np.asarray(init, dtype=np.float32).copy()
    if init is None and len(x) < k:
        raise ValueError(f"need at least k={k} summary points, got {len(x)}")
    best: np.ndarray | None = None
    if init is not None:
        best = _reseed_dead(x, w, _lloyd(x, w, np.asarray(init, dtype=np.float64)), rng)
    if len(x) >= k:
        cands = [_reseed_dead(x, w, _lloyd(x, w, _plus_plus(x, w, k, rng)), rng) for _ in range(max(1, restarts))]
        cand = min(cands, key=lambda c: _inertia(x, w, c))
        if best is None or _inertia(x, w, cand) < (1.0 - restart_gain) * _inertia(x, w, best):
            best = cand
    assert best is not None
    return best.astype(np.float32)
