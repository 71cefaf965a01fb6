"""The per-user time split and HR@10 of segment-popularity recommendations.

Protocol: for each user the first 80% of their ratings by time are
*history*, the rest are *held out*. A user's recommendations are the ``n``
items most rated within their segment's history that the user has not rated;
HR@n is the share of users with at least one held-out item among them. With a
single segment this is the global-popularity baseline.

    >>> events = [{"user_id": u, "item_id": i, "ts": t} for t, (u, i) in enumerate(
    ...     [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 1), ("b", 2), ("b", 3), ("b", 6), ("b", 4)])]
    >>> split = split_by_time(events, history_share=0.8)
    >>> [e["item_id"] for e in split.history if e["user_id"] == "a"], split.heldout["a"]
    ([1, 2, 3, 4], {5})
    >>> recs = recommend({"a": 0, "b": 0}, split.history_items, n=1)   # one segment: global popularity
    >>> recs["a"], recs["b"]   # the most rated item each has not rated yet
    ([6], [4])
    >>> hit_rate({"a": 0, "b": 0}, split, n=1)   # b's held-out item is 4: one hit in two users
    0.5
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Split", "split_by_time", "recommend", "hit_rate", "user_hits", "mean_by_group", "last_activity_groups",
           "segment_item_counts", "paired_uncertainty"]


@dataclass
class Split:
    history: list[dict[str, Any]]  # history events of every user, in event-time order
    history_items: dict[str, set[int]] = field(default_factory=dict)
    heldout: dict[str, set[int]] = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return sorted(self.history_items)


def split_by_time(events: Iterable[Mapping[str, Any]], history_share: float = 0.8) -> Split:
    """Each user's first ``history_share`` of events by time (ties: log order) are history."""
    per_user: dict[str, list[tuple[float, int, Mapping[str, Any]]]] = collections.defaultdict(list)
    for pos, ev in enumerate(events):
        per_user[str(ev["user_id"])].append((float(ev["ts"]), pos, ev))
    history: list[tuple[float, int, dict[str, Any]]] = []
    split = Split(history=[])
    for uid, evs in per_user.items():
        evs.sort(key=lambda x: (x[0], x[1]))
        cut = int(len(evs) * history_share)
        if cut == len(evs):
            cut -= 1  # at least one held-out item
        split.history_items[uid] = {int(e["item_id"]) for _, _, e in evs[:cut]}
        split.heldout[uid] = {int(e["item_id"]) for _, _, e in evs[cut:]}
        history.extend((t, p, dict(e)) for t, p, e in evs[:cut])
    history.sort(key=lambda x: (x[0], x[1]))
    split.history = [e for _, _, e in history]
    return split


def segment_item_counts(segment_of: Mapping[str, int], history_items: Mapping[str, set[int]]) -> dict[int, collections.Counter[int]]:
    """Ratings of each item within each segment's history."""
    counts: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for uid, items in history_items.items():
        counts[segment_of.get(uid, -1)].update(items)
    return counts


def recommend(segment_of: Mapping[str, int], history_items: Mapping[str, set[int]], n: int = 10) -> dict[str, list[int]]:
    """The ``n`` items most rated in each user's segment (ties: lower item id) that the user has not rated.

    Users without a segment (absent from ``segment_of``) share segment -1.
    """
    counts = segment_item_counts(segment_of, history_items)
    ranked = {s: [i for i, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))] for s, c in counts.items()}
    out: dict[str, list[int]] = {}
    for uid, seen in history_items.items():
        recs: list[int] = []
        for item in ranked[segment_of.get(uid, -1)]:
            if item not in seen:
                recs.append(item)
                if len(recs) == n:
                    break
        out[uid] = recs
    return out


def user_hits(segment_of: Mapping[str, int], split: Split, n: int = 10) -> list[bool]:
    """Whether each user (in ``split.users`` order) has at least one held-out item among their ``n``
    recommendations: what :func:`hit_rate` averages, kept per user for breakdowns and intervals."""
    recs = recommend(segment_of, split.history_items, n)
    return [bool(split.heldout[u].intersection(recs[u])) for u in split.users]


def hit_rate(segment_of: Mapping[str, int], split: Split, n: int = 10) -> float:
    """HR@n: share of users with at least one held-out item among their ``n`` recommendations."""
    hits = user_hits(segment_of, split, n)
    return sum(hits) / len(hits) if hits else 0.0


def last_activity_groups(split: Split, groups: int = 4) -> dict[str, int]:
    """Each user's group by the time of their last history event: ``groups`` equal groups, 0 the least
    recently active (ties: user id).

    >>> s = split_by_time([{"user_id": u, "item_id": i, "ts": 10 * u + i} for u in range(8) for i in range(5)])
    >>> [last_activity_groups(s)[str(u)] for u in range(8)]
    [0, 0, 1, 1, 2, 2, 3, 3]
    """
    last: dict[str, float] = {}
    for e in split.history:
        uid = str(e["user_id"])
        last[uid] = max(last.get(uid, float("-inf")), float(e["ts"]))
    order = sorted(last, key=lambda u: (last[u], u))
    return {u: min(groups * rank // len(order), groups - 1) for rank, u in enumerate(order)}


def mean_by_group(values: Sequence[float], group: Sequence[int], groups: int) -> list[float]:
    """The mean of ``values`` within each group ``0..groups-1`` (``group``: each value's); NaN for an empty one.

    >>> mean_by_group([1, 0, 1, 1], [0, 0, 1, 1], 3)
    [0.5, 1.0, nan]
    """
    v, g = np.asarray(values, dtype=np.float64), np.asarray(group)
    n = np.bincount(g, minlength=groups)[:groups]
    total = np.bincount(g, weights=v, minlength=groups)[:groups]
    return [float(t / c) if c else float("nan") for t, c in zip(total, n)]


def paired_uncertainty(hits: Sequence[float], reference: Sequence[float], popularity: Sequence[float], *,
                       resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How much the choice of users alone moves a comparison of two segmentations scored on the same users.

    ``hits``, ``reference`` and ``popularity``: each user's hit (a mean over seeds is fine) under the
    segmentation, under the one it is compared with, and under global popularity, users in the same order.
    Returns the mean difference ``hits - reference`` with its paired standard error over users, and a
    95% percentile bootstrap interval of ``mean(hits) / mean(popularity)`` (users drawn with replacement,
    ``resamples`` times, seeded: the same inputs give the same interval).

    >>> u = paired_uncertainty([1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0], resamples=200)
    >>> u["minus_reference"], round(u["minus_reference_se"], 3), u["users"]
    (0.25, 0.25, 4)
    >>> lo, hi = u["vs_popularity_ci95"]; lo <= 3.0 <= hi
    True
    """
    a, b, p = (np.asarray(x, dtype=np.float64) for x in (hits, reference, popularity))
    if not len(a) == len(b) == len(p) or len(a) < 2:
        raise ValueError(f"need the same users (at least two) in all three: {len(a)}, {len(b)}, {len(p)}")
    d = a - b
    draws = np.random.default_rng(seed).integers(0, len(a), (resamples, len(a)))
    base = p[draws].mean(axis=1)
    ratio = a[draws].mean(axis=1)[base > 0] / base[base > 0]
    return {"users": len(a), "minus_reference": float(d.mean()),
            "minus_reference_se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "vs_popularity_ci95": [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))],
            "resamples": resamples}
