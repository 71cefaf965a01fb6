"""Stable segment identity: match a new set of centroids to the previous segments.

Clusterers renumber their clusters (DBSTREAM at every recluster, river #891;
k-means when centres are re-seeded). :func:`match_ids` gives each new
centroid the id of the previous segment it matches (Hungarian assignment on
centroid distance, ``scipy.optimize.linear_sum_assignment``), mints fresh ids
for the rest (never reusing one) and says why each id appeared or
disappeared, as lineage records:

- ``born``: a new centroid far from every previous one;
- ``split``: a new centroid whose nearest previous segment survives (parent);
- ``merged``: a previous segment whose nearest new centroid kept another id;
- ``retired``: a previous segment with no new centroid near it.

    >>> import numpy as np
    >>> old = np.array([[0.0, 0.0], [5.0, 0.0]], np.float32)
    >>> new = np.array([[5.1, 0.0], [0.1, 0.0], [0.0, 0.6]], np.float32)  # renumbered + one new
    >>> m = match_ids(old, np.array([3, 4]), new, next_id=5, max_distance=1.0)
    >>> m.ids.tolist(), m.next_id, [(e.kind, e.segments, e.parents) for e in m.events]
    ([4, 3, 5], 6, [('split', (5,), (3,))])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Lineage", "Matching", "match_ids", "match_to_previous"]


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
              max_distance: float | np.ndarray) -> Matching:
    """Ids for ``new_centroids``: Hungarian match to ``old_centroids`` within ``max_distance`` (one
    distance, or one per old centroid)."""
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
    reach = np.broadcast_to(np.asarray(max_distance, dtype=np.float64), (len(old_ids),))
    rows, cols = linear_sum_assignment(d)
    ok = d[rows, cols] <= reach[cols]
    ids[rows[ok]] = old_ids[cols[ok]]
    kept_old = np.zeros(len(old_ids), dtype=bool)
    kept_old[cols[ok]] = True
    for j in np.flatnonzero(ids < 0):  # new centroids without a partner
        ids[j] = next_id
        next_id += 1
        near = int(d[j].argmin())
        if d[j, near] <= reach[near] and kept_old[near]:
            events.append(Lineage("split", (int(ids[j]),), (int(old_ids[near]),),
                                  f"{d[j, near]:.3g} from its parent"))
        else:
            events.append(Lineage("born", (int(ids[j]),)))
    for i in np.flatnonzero(~kept_old):  # previous segments without a partner
        near = int(d[:, i].argmin())
        if d[near, i] <= reach[i]:
            events.append(Lineage("merged", (int(old_ids[i]),), (int(ids[near]),),
                                  f"absorbed by {int(ids[near])}"))
        else:
            events.append(Lineage("retired", (int(old_ids[i]),)))
    return Matching(ids, next_id, events)


def match_to_previous(old_centroids: np.ndarray, old_ids: np.ndarray, new_centroids: np.ndarray, *,
                      next_id: int) -> Matching:
    """:func:`match_ids` with the reach k-means versions use, local (a restart, :mod:`state.kmeans`) and
    global (a merge, :mod:`state.global_model`) alike: a new centre keeps an old id when it lies within
    half the distance from that old centre to its nearest old neighbour (closer to it than to any
    other old segment's territory).

    >>> old = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 1.0]], np.float32)  # 7 is far from the pair 8, 9
    >>> new = np.array([[1.5, 0.0], [4.0, 0.1], [4.0, 1.6]], np.float32)  # 7 moved 1.5: within its reach
    >>> m = match_to_previous(old, np.array([7, 8, 9]), new, next_id=10)  # 9 moved 0.6: beyond its 0.5
    >>> m.ids.tolist(), [(e.kind, e.segments) for e in m.events]
    ([7, 8, 10], [('born', (10,)), ('retired', (9,))])
    """
    old = np.asarray(old_centroids, dtype=np.float64)
    if len(old) < 2:
        reach = np.full(len(old), np.inf)
    else:
        gaps = np.sqrt(np.maximum((old ** 2).sum(1)[:, None] - 2.0 * old @ old.T + (old ** 2).sum(1)[None, :], 0.0))
        np.fill_diagonal(gaps, np.inf)
        reach = 0.5 * gaps.min(axis=1)
    return match_ids(old_centroids, old_ids, new_centroids, next_id=next_id, max_distance=reach)
