"""Stable segment identity: match a new set of centroids to the previous segments.

Clusterers renumber their clusters (DBSTREAM at every recluster, river #891;
k-means when centres are re-seeded). :func:`match_ids` gives each new
centroid the id of the previous segment it matches (Hungarian assignment on
centroid distance, ``scipy.optimize.linear_sum_assignment``), mints fresh ids
for the rest (never reusing one) and says why each id appeared or
disappeared, as lineage records:

- ``born``: a new centroid far from every previous one;
- ``split``: a new centroid whose nearest previous segment survives (parent) and is near it;
- ``merged``: a previous segment whose nearest new centroid (near it) kept another id;
- ``retired``: a previous segment with no new centroid near it.

"Near" is ``split_factor`` (1.5) times the matching bound: with the relative bound of
:func:`identify`, within three quarters of the distance to the parent's nearest neighbour
(a neighbour that did not move is not near: an end next to it is a retirement, not a merge).

    >>> import numpy as np
    >>> old = np.array([[0.0, 0.0], [5.0, 0.0]], np.float32)
    >>> new = np.array([[5.1, 0.0], [0.1, 0.0], [0.0, 0.6]], np.float32)  # renumbered + one new
    >>> m = match_ids(old, np.array([3, 4]), new, next_id=5, max_distance=1.0)
    >>> m.ids.tolist(), m.next_id, [(e.kind, e.segments, e.parents) for e in m.events]
    ([4, 3, 5], 6, [('split', (5,), (3,))])

Every clusterer names its segments through :func:`identify`, once per published
model version, so ids mean the same thing whatever learner made the centroids.
Its threshold is relative: a new centroid keeps an old id when it lies within
``relative`` (default one half) of the distance from that old centroid to its
nearest old neighbour, i.e. well inside the old segment's Voronoi cell, still
covering the same users; ``cap`` (DBSTREAM: ``match_factor`` radii) bounds it in
embedding units. A centroid that drifts slowly keeps its id across any number
of versions; one that jumps to another region of the space is a new segment.

    >>> prev = SegmentModel(4, old, np.array([3, 4]), 0.0)
    >>> m = identify(prev, new[:2] + 0.3, next_id=5)   # moved 0.3 < 5 / 2: same segments
    >>> m.ids.tolist(), m.events
    ([4, 3], [])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from state.segments import SegmentModel

__all__ = ["Lineage", "Matching", "match_ids", "identify", "match_thresholds", "match_to_previous", "MATCH_RELATIVE"]

#: a new centroid keeps an old id within this share of the old centroid's distance to its nearest neighbour
MATCH_RELATIVE = 0.5


@dataclass(frozen=True)
class Lineage:
    """One lineage record before it is stamped with a model version and event time."""

    kind: str  # born | retired | merged | split
    segments: tuple[int, ...]
    parents: tuple[int, ...] = ()
    detail: str = ""


@dataclass
class Matching:
    ids: np.ndarray  # int64 [k_new], stable id of each new centroid
    next_id: int
    events: list[Lineage] = field(default_factory=list)


def match_ids(old_centroids: np.ndarray, old_ids: np.ndarray, new_centroids: np.ndarray, *, next_id: int,
              max_distance: float | np.ndarray, split_factor: float = 1.5) -> Matching:
    """Ids for ``new_centroids``: Hungarian match to ``old_centroids`` within ``max_distance``
    (one bound for all, or one per old centroid); lineage as in the module docstring."""
    k_new = len(new_centroids)
    ids = np.full(k_new, -1, dtype=np.int64)
    events: list[Lineage] = []
    if len(old_centroids) == 0:
        ids[:] = np.arange(next_id, next_id + k_new)
        events = [Lineage("born", (int(i),)) for i in ids]
        return Matching(ids, next_id + k_new, events)
    if k_new == 0:
        return Matching(ids, next_id, [Lineage("retired", (int(i),)) for i in old_ids])
    d = np.sqrt(np.maximum(
        (new_centroids ** 2).sum(1)[:, None] - 2.0 * new_centroids @ old_centroids.T
        + (old_centroids ** 2).sum(1)[None, :], 0.0)).astype(np.float64)
    limit = np.broadcast_to(np.asarray(max_distance, dtype=np.float64), (len(old_ids),))
    within = d <= limit[None, :]
    near_enough = d <= split_factor * limit[None, :]
    # pairs beyond the bound never compete with pairs within it (a far pair must not displace a near one)
    rows, cols = linear_sum_assignment(np.where(within, d, d + 1e6 * (1.0 + d.max())))
    ok = within[rows, cols]
    ids[rows[ok]] = old_ids[cols[ok]]
    kept_old = np.zeros(len(old_ids), dtype=bool)
    kept_old[cols[ok]] = True
    for j in np.flatnonzero(ids < 0):  # new centroids without a partner
        ids[j] = next_id
        next_id += 1
        near = int(d[j].argmin())
        if near_enough[j, near] and kept_old[near]:
            events.append(Lineage("split", (int(ids[j]),), (int(old_ids[near]),),
                                  f"{d[j, near]:.3g} from its parent"))
        else:
            events.append(Lineage("born", (int(ids[j]),)))
    for i in np.flatnonzero(~kept_old):  # previous segments without a partner
        near = int(d[:, i].argmin())
        if near_enough[near, i]:
            events.append(Lineage("merged", (int(old_ids[i]),), (int(ids[near]),),
                                  f"absorbed by {int(ids[near])}"))
        else:
            events.append(Lineage("retired", (int(old_ids[i]),)))
    return Matching(ids, next_id, events)


def match_thresholds(centroids: np.ndarray, *, relative: float = MATCH_RELATIVE,
                     cap: float = float("inf")) -> np.ndarray:
    """Per centroid: ``relative`` x the distance to its nearest other centroid, at most ``cap``.

    >>> match_thresholds(np.array([[0.0], [4.0], [10.0]], np.float32)).tolist()
    [2.0, 2.0, 3.0]
    """
    k = len(centroids)
    if k < 2:
        return np.full(k, cap, dtype=np.float64)
    c = centroids.astype(np.float64)
    gaps = np.sqrt(np.maximum((c * c).sum(1)[:, None] - 2.0 * c @ c.T + (c * c).sum(1)[None, :], 0.0))
    np.fill_diagonal(gaps, np.inf)
    return np.minimum(relative * gaps.min(axis=1), cap)


def identify(previous: SegmentModel | None, centroids: np.ndarray, *, next_id: int,
             relative: float = MATCH_RELATIVE, cap: float = float("inf")) -> Matching:
    """Stable ids for the centroids of a new model version, matched to ``previous`` (None: all born)."""
    if previous is None:
        return match_ids(np.zeros((0, centroids.shape[1]), np.float32), np.zeros(0, np.int64), centroids,
                         next_id=next_id, max_distance=cap)
    limit = match_thresholds(previous.centroids, relative=relative, cap=cap)
    return match_ids(previous.centroids, previous.segment_ids, centroids, next_id=next_id, max_distance=limit)


def match_to_previous(old_centroids: np.ndarray, old_ids: np.ndarray, new_centroids: np.ndarray, *,
                      next_id: int, cap: float = float("inf")) -> Matching:
    """:func:`identify` for centres given as arrays (the global model's merges, :mod:`state.global_model`):
    the same relative threshold (and ``cap``, DBSTREAM's), so local and global versions keep ids by one rule.

    >>> old = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 1.0]], np.float32)  # 7 is far from the pair 8, 9
    >>> new = np.array([[1.5, 0.0], [4.0, 0.1], [4.0, 3.0]], np.float32)  # 7 moved 1.5: within its reach
    >>> m = match_to_previous(old, np.array([7, 8, 9]), new, next_id=10)  # 9 moved 2: far beyond its 0.5
    >>> m.ids.tolist(), [(e.kind, e.segments) for e in m.events]
    ([7, 8, 10], [('born', (10,)), ('retired', (9,))])
    """
    return match_ids(old_centroids, old_ids, new_centroids, next_id=next_id,
                     max_distance=match_thresholds(np.asarray(old_centroids), cap=cap))
