"""Segment profiles: what a segment means, computed columnar from the user state.

A profile per segment of one model version, stamped with that version: its
size, the members' mean distance to the centroid, its top category columns
(mean category mix of its members), its top items by the input's own item ids
(decayed weight summed over members' recent items), its mean action mix and a
centroid summary (norm and the largest coordinates). Members are a seeded,
bounded sample per segment so that profiling costs the same whatever the
number of users.

The user state keeps items as tokens (crc32 of the id); :class:`ItemNames`
maps tokens back to the ids the input wrote, fed by the decoder with each
item's first sighting (``EventBatch.item_names``). It is bounded: an item whose
name has been evicted is left out of ``top_items`` (the next item takes its place).

    >>> import numpy as np
    >>> from eventlogs.synthetic import SyntheticConfig, generate
    >>> from stream.runtime.pipeline import Pipeline
    >>> from stream.settings import Settings
    >>> p = Pipeline.from_settings(Settings(segments=2, warmup_users=20, model_update_events=100))
    >>> _ = p.process_objects(list(generate(SyntheticConfig(users=40, groups=2, events=400))))
    >>> profs = segment_profiles(p.store, p.model, np.random.default_rng(0), top=3)
    >>> sorted(pr["segment"] for pr in profs), sum(pr["size"] for pr in profs), profs[0]["model_version"] == p.model.version
    ([0, 1], 40, True)
    >>> len(profs[0]["top_categories"]) <= 3 and profs[0]["top_categories"][0][0].startswith("cat")
    True
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from state.segments import SegmentModel
from state.user_store import UserStore

__all__ = ["segment_profiles", "ItemNames"]

#: item names kept for profiles: at least as many as the tokeniser's cache (it names each item once)
ITEM_NAMES = 250_000


class ItemNames:
    """A bounded map from item token back to the item id as the input wrote it (oldest names go first).

    >>> names = ItemNames(capacity=2); names.update({1: "a", 2: 7}); names.update({3: "c"})
    >>> [names.get(t) for t in (1, 2, 3)]
    [None, 7, 'c']
    """

    def __init__(self, capacity: int = ITEM_NAMES) -> None:
        self.capacity = capacity
        self._names: dict[int, str | int] = {}

    def __len__(self) -> int:
        return len(self._names)

    def update(self, names: dict[int, str | int]) -> None:
        if not names:
            return
        self._names.update(names)
        over = len(self._names) - self.capacity
        if over > 0:
            for key in list(itertools.islice(iter(self._names), over)):
                del self._names[key]

    def get(self, token: int) -> str | int | None:
        return self._names.get(token)


def segment_profiles(store: UserStore, model: SegmentModel | None, rng: np.random.Generator, *, top: int = 5,
                     sample_per_segment: int = 2000, item_names: ItemNames | None = None,
                     event_time: float = float("nan")) -> list[dict[str, Any]]:
    """One profile dict per segment of ``model`` (sizes and mean distances count every live user; the
    mixes a sample). ``item_names``: without it, ``top_items`` name items by token."""
    if model is None:
        return []
    spec = store.spec
    rows = store.live_rows()
    ix = model.index_of(store.segment[rows].astype(np.int64))
    rows, ix = rows[ix >= 0], ix[ix >= 0]
    sizes = np.bincount(ix, minlength=model.k)
    dist = store.distance[rows].astype(np.float64)
    ok_d = np.isfinite(dist)
    mean_d = np.bincount(ix[ok_d], weights=dist[ok_d], minlength=model.k) / np.maximum(
        np.bincount(ix[ok_d], minlength=model.k), 1)
    # bounded sample per segment: members grouped by segment (numpy sorts int16 keys by radix), then a
    # seeded choice of `sample_per_segment` positions within each segment larger than that
    grouped = np.argsort(ix.astype(np.int16) if model.k <= np.iinfo(np.int16).max else ix, kind="stable")
    starts = np.cumsum(sizes) - sizes
    parts = []
    for j in range(model.k):
        members = grouped[starts[j] : starts[j] + sizes[j]]
        if sizes[j] > sample_per_segment:
            members = members[np.sort(rng.choice(int(sizes[j]), sample_per_segment, replace=False))]
        parts.append(members)
    sampled = np.minimum(sizes, sample_per_segment)
    bounds = np.cumsum(sampled) - sampled
    prow = rows[np.concatenate(parts)] if parts else rows[:0]
    f = store.features(prow) if len(prow) else None
    names = spec.feature_names()
    a_end, c_end = spec.n_actions, spec.n_actions + spec.category_buckets
    out = []
    for j in range(model.k):
        s, e = int(bounds[j]), int(bounds[j] + sampled[j])
        prof: dict[str, Any] = {"segment": int(model.segment_ids[j]), "model_version": model.version,
                                "event_time": float(event_time), "size": int(sizes[j]),
                                "mean_distance": round(float(mean_d[j]), 6), "sampled": e - s,
                                "top_categories": [], "top_items": [], "actions": {}}
        if f is not None and e > s:
            dense = f.dense[s:e]
            cats = dense[:, a_end:c_end].mean(axis=0)
            best = np.argsort(-cats, kind="stable")[:top]
            prof["top_categories"] = [[names[a_end + int(c)], round(float(cats[c]), 4)] for c in best if cats[c] > 0]
            acts = dense[:, :a_end].mean(axis=0)
            prof["actions"] = {names[i].split(":", 1)[1]: round(float(acts[i]), 4) for i in range(a_end)}
            tok, w = f.item_tokens[s:e].ravel(), f.item_weights[s:e].ravel()
            ok = tok >= 0
            if ok.any():
                uniq, inv = np.unique(tok[ok], return_inverse=True)
                tw = np.bincount(inv, weights=w[ok])
                named = []
                for i in np.argsort(-tw, kind="stable").tolist():
                    name = int(uniq[i]) if item_names is None else item_names.get(int(uniq[i]))
                    if name is not None:
                        named.append([name, round(float(tw[i]), 4)])
                        if len(named) == top:
                            break
                prof["top_items"] = named
        c = model.centroids[j]
        big = np.argsort(-np.abs(c), kind="stable")[:top]
        prof["centroid"] = {"norm": round(float(np.linalg.norm(c)), 6),
                            "top_dims": [[int(d), round(float(c[d]), 6)] for d in big]}
        out.append(prof)
    return out
