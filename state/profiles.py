"""Segment profiles: what a segment means, computed columnar from the user state.

A profile per live segment: its size, its top category columns (mean
category mix of its members), its top item tokens (decayed weight summed over
members' recent items), its mean action mix and a centroid summary (norm and
the largest coordinates). Members are a seeded, bounded sample per segment
so that profiling costs the same whatever the number of users.

    >>> import numpy as np
    >>> from eventlogs.synthetic import SyntheticConfig, generate
    >>> from stream.runtime.pipeline import Pipeline
    >>> from stream.settings import Settings
    >>> p = Pipeline.from_settings(Settings(segments=2, warmup_users=20, model_update_events=100))
    >>> _ = p.process_objects(list(generate(SyntheticConfig(users=40, groups=2, events=400))))
    >>> profs = segment_profiles(p.store, p.model, np.random.default_rng(0), top=3)
    >>> sorted(pr["segment"] for pr in profs), sum(pr["size"] for pr in profs)
    ([0, 1], 40)
    >>> len(profs[0]["top_categories"]) <= 3 and profs[0]["top_categories"][0][0].startswith("cat")
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.segments import SegmentModel
from state.user_store import UserStore

__all__ = ["segment_profiles"]


def segment_profiles(store: UserStore, model: SegmentModel | None, rng: np.random.Generator, *, top: int = 5,
                     sample_per_segment: int = 2000) -> list[dict[str, Any]]:
    """One profile dict per segment of ``model`` (sizes count every live user; the mixes a sample)."""
    if model is None:
        return []
    spec = store.spec
    rows = store.live_rows()
    ix = model.index_of(store.segment[rows].astype(np.int64))
    rows, ix = rows[ix >= 0], ix[ix >= 0]
    sizes = np.bincount(ix, minlength=model.k)
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
        prof: dict[str, Any] = {"segment": int(model.segment_ids[j]), "size": int(sizes[j]),
                                "sampled": e - s, "top_categories": [], "top_items": [], "actions": {}}
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
                best = np.argsort(-tw, kind="stable")[:top]
                prof["top_items"] = [[int(uniq[i]), round(float(tw[i]), 4)] for i in best]
        c = model.centroids[j]
        big = np.argsort(-np.abs(c), kind="stable")[:top]
        prof["centroid"] = {"norm": round(float(np.linalg.norm(c)), 6),
                            "top_dims": [[int(d), round(float(c[d]), 6)] for d in big]}
        out.append(prof)
    return out
