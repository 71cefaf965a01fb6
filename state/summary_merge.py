"""The global model's merge: clustering the union of the members' summaries (:mod:`state.global_model`).

A summary is a set of weighted points. With k-means (:func:`cluster_summaries`) they are one member's
local centres, each with a decayed count of the embeddings nearest to it, and the leader clusters the
union of every member's points into the model's ``k`` segments by weighted k-means. With DBSTREAM
(:func:`connect_summaries`) they are one member's micro-clusters with their faded weights and the pairs
its shared-density graph connects, and the leader makes macro-clusters of the union the way DBSTREAM
does. Small inputs (a few dozen to a few thousand points), so float64 and plain loops over restarts.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from state.dbstream import heavy_enough

__all__ = ["cluster_summaries", "connect_summaries"]


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


def connect_summaries(points: np.ndarray, weights: np.ndarray, links: np.ndarray, member: np.ndarray, *,
                      radius: float, minimum_weight: float, min_share: float, previous: np.ndarray | None = None,
                      cap: float = float("inf")) -> np.ndarray:
    """The segments' centres [s, dim] made of every member's micro-clusters, as DBSTREAM makes them.

    Macro-clusters are the connected components of the micro-clusters heavier than ``minimum_weight``:
    two of one member are connected when that member's DBSTREAM connects them (``links``: its shared
    density graph, rows into ``points``); two of different members when their centres lie within
    ``radius`` of each other (they cover the same region: DBSTREAM's own learner never keeps two centres
    that close, it would feed both with the same points). A macro-cluster's centre is the weighted mean
    of its micro-clusters (river's merge); :func:`state.dbstream.heavy_enough` then says which are
    segments (``min_share`` of the total weight, half of it near a segment of ``previous``).

    Two members whose micro-clusters cover different groups, and one group both see (its micro-clusters
    interleaved, 0.2 apart at radius 0.3): three segments, the shared group one of them.

    >>> line = lambda x0, n: np.c_[x0 + 0.4 * np.arange(n), np.zeros(n)]  # micro-clusters along a line
    >>> a = np.vstack([line(0.0, 3), line(10.0, 3)])                    # member a: groups at 0 and 10
    >>> b = np.vstack([line(20.0, 3), line(10.2, 3)])                   # member b: groups at 20 and 10
    >>> chain = np.array([[0, 1], [1, 2], [3, 4], [4, 5]])              # each member's own connections
    >>> c = connect_summaries(np.vstack([a, b]), np.full(12, 5.0), np.vstack([chain, chain + 6]),
    ...                       np.repeat([0, 1], 6), radius=0.3, minimum_weight=1.0, min_share=0.05)
    >>> [round(float(v), 1) for v in c[:, 0]]
    [0.4, 10.5, 20.4]
    """
    x = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    heavy = w > minimum_weight
    if not heavy.any():
        return np.zeros((0, x.shape[1]), np.float32)
    member = np.asarray(member)
    # pairs within one radius from a k-d tree: members' micro-clusters can number thousands in all
    near = cKDTree(x).query_pairs(radius, output_type="ndarray").reshape(-1, 2)
    i, j = near[member[near[:, 0]] != member[near[:, 1]]].T
    i, j = np.concatenate([links[:, 0], i]), np.concatenate([links[:, 1], j])
    both = heavy[i] & heavy[j]
    graph = coo_matrix((np.ones(int(both.sum())), (i[both], j[both])), shape=(len(x), len(x)))
    _, label = connected_components(graph, directed=False)
    rows = np.flatnonzero(heavy)
    # components numbered by their first micro-cluster (members in id order): the same merge on every leader
    _, first, label = np.unique(label[rows], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    label = order[label]
    mass = np.bincount(label, weights=w[rows])
    centres = np.zeros((len(mass), x.shape[1]))
    np.add.at(centres, label, x[rows] * w[rows, None])
    centres /= mass[:, None]
    keep = heavy_enough(centres, mass, previous, min_share=min_share, cap=cap)
    return centres[keep].astype(np.float32)
