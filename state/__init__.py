"""Per-user state and the segment model: the layer below the Kafka edges.

Everything here works on numpy columns and knows nothing of Kafka, torch or
Prometheus, so replays, benchmarks and tests drive it directly.

- ``events``: input contract v1, decoded and validated into a columnar :class:`EventBatch`
  (``fastdecode``: the column-at-a-time checks of its fast path)
- ``features``: how events fold into the per-user feature vector (:class:`FeatureSpec`)
- ``user_store``: the per-user state rows (:class:`UserStore`; ``id_column``: their ids, inline in
  numpy; ``id_index``: id -> row)
- ``segments``: the published segment model and assignment (:class:`SegmentModel`)
- ``kmeans`` / ``dbstream``: the online clusterers (river) with stable ids and lineage
- ``identity``: id matching between model versions; ``global_model``: one model for a group
  (``global_dbstream``: the same with DBSTREAM; ``summary_merge``: the merges, weighted k-means
  over the members' centres or DBSTREAM's macro-clusters of their micro-clusters)
- ``profiles``: segment profiles; ``quality``: ARI and contingency tables
"""

from __future__ import annotations

from state.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "EventBatch": "state.events",
    "EventDecoder": "state.events",
    "Rejected": "state.events",
    "REASONS": "state.events",
    "DELETE_ACTION": "state.events",
    "FeatureSpec": "state.features",
    "UserStore": "state.user_store",
    "SegmentModel": "state.segments",
    "OnlineKMeans": "state.kmeans",
    "LineageEvent": "state.kmeans",
    "OnlineDBSTREAM": "state.dbstream",
    "GlobalKMeans": "state.global_model",
    "GlobalDBSTREAM": "state.global_dbstream",
    "segment_profiles": "state.profiles",
    "adjusted_rand_index": "state.quality",
})
