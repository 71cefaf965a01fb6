"""The global model with DBSTREAM: the same protocol as :mod:`state.global_model`, micro-clusters as summaries.

Each member keeps a local :class:`~state.dbstream.OnlineDBSTREAM` (river, as in single-instance mode)
over its own users. Its summary is what DBSTREAM knows of them: the micro-clusters' centres, their
weights faded to now, and the pairs of micro-clusters its shared-density graph connects (``links``,
rows of the summary). The leader makes each version's segments of the union of every live member's
micro-clusters the way DBSTREAM makes macro-clusters (:func:`state.summary_merge.connect_summaries`):
connected components of the heavy micro-clusters, one member's pairs as that member's DBSTREAM connects
them, two members' micro-clusters when their centres lie within one radius; then DBSTREAM's min-share
rule (:func:`state.dbstream.heavy_enough`, hysteresis against the previous version). So a group that
only one member sees keeps a segment of its own, and one that every member sees is one segment.

Everything else is :class:`~state.global_model.GlobalKMeans`: summaries and heartbeats, v1 once every
partition is covered, one merge per round, ids carried over by
:func:`state.identity.match_to_previous` (capped at ``SEGSTREAM_MATCH_FACTOR`` radii, as locally),
lineage in the version record published by its proposer, first record wins. A version has as many
segments as the density finds (records carry ``clusterer: dbstream``, ``k`` is the version's own).

Two members that see different groups: v1 keeps each member's group as a segment of its own.

    >>> import numpy as np
    >>> from state.dbstream import OnlineDBSTREAM
    >>> rng = np.random.default_rng(0)
    >>> blob = lambda c: rng.normal(c, 0.02, (60, 2)).astype(np.float32)
    >>> local = lambda: OnlineDBSTREAM(2, radius=0.1, warmup_users=60, recluster_events=60)
    >>> a, b = GlobalDBSTREAM(local(), "a"), GlobalDBSTREAM(local(), "b")
    >>> a.add_warmup([f"a{i}" for i in range(60)], blob(0.0), event_time=1.0, events=60)
    >>> b.add_warmup([f"b{i}" for i in range(60)], blob(1.0), event_time=1.0, events=60)
    >>> log = a.outgoing(leader=True, partitions=[0], n_partitions=2) + b.outgoing(leader=False, partitions=[1])
    >>> for m in log:
    ...     _ = a.receive(m), b.receive(m)
    >>> v1, = a.outgoing(leader=True)
    >>> v1["clusterer"], v1["k"], v1["members"]
    ('dbstream', 2, {'a': 60, 'b': 60})
    >>> _ = a.receive(v1), b.receive(v1)
    >>> sorted(np.round(np.abs(b.model.centroids[:, 0]), 1).tolist())
    [0.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.dbstream import OnlineDBSTREAM
from state.global_model import GlobalKMeans
from state.segments import SegmentModel
from state.summary_merge import connect_summaries

__all__ = ["GlobalDBSTREAM"]


class GlobalDBSTREAM(GlobalKMeans):
    """:class:`GlobalKMeans`'s protocol over local DBSTREAM learners (``k``: unused, versions size
    themselves)."""

    name = "dbstream-global"
    clusterer = "dbstream"
    fixed_k = False

    def __init__(self, local: OnlineDBSTREAM, instance_id: str, **kw: Any) -> None:
        kw.pop("k", None)
        super().__init__(local, instance_id, k=1, **kw)  # type: ignore[arg-type]
        self.update_every = local.recluster_events

    # ----- the local summary: DBSTREAM's micro-clusters -----------------------------
    @property
    def _min_points(self) -> int:
        return 1

    @property
    def _match_cap(self) -> float:
        return float(self.local.max_match_distance)

    def _learn_local(self, emb: np.ndarray, keys: np.ndarray | None) -> None:
        self.local.learn(emb, keys)

    def _seed_local(self) -> None:
        """Seed the local learner from this member's own first users and summarise them."""
        self.local.seed_model(self._time())
        self.local.drain_lineage()  # the local learner's segments are private: only its micro-clusters count
        self._summarise()

    def _start_local(self, model: SegmentModel) -> None:
        """v1 arrived before the local learner was seeded: from this member's own users when it holds any,
        else river starts empty and the recluster schedule from v1 (its next recluster replaces it)."""
        if len(self.local._warm):
            self._seed_local()
            return
        self.local.adopt(model.centroids, model.version, model.event_time)

    def _summary_body(self) -> dict[str, Any]:
        centres, weights, links = self.local.micro_summary()
        return {"centroids": np.ascontiguousarray(centres, dtype="<f4").tobytes(), "weights": weights.tolist(),
                "links": links.tolist()}

    def _cluster_live(self, live: dict[str, dict[str, Any]], previous: SegmentModel | None,
                      version: int) -> np.ndarray:
        """Macro-clusters of every live member's micro-clusters (members in id order), then segments."""
        xs, ws, links, member = [np.zeros((0, self.dim), np.float32)], [np.zeros(0)], [np.zeros((0, 2), np.int64)], []
        n = 0
        for i, s in enumerate(live.values()):
            w = np.asarray(s["weights"], np.float64)
            xs.append(np.frombuffer(s["centroids"], "<f4").reshape(len(w), self.dim))
            ws.append(w)
            pairs = np.asarray(s.get("links") or [], np.int64).reshape(-1, 2)
            links.append(pairs[(pairs >= 0).all(1) & (pairs < len(w)).all(1)] + n)
            member += [i] * len(w)
            n += len(w)
        lr = self.local.learner
        return connect_summaries(np.concatenate(xs), np.concatenate(ws), np.concatenate(links), np.array(member),
                                 radius=lr.clustering_threshold, minimum_weight=lr.minimum_weight,
                                 min_share=self.local.min_share,
                                 previous=None if previous is None else previous.centroids, cap=self._match_cap)

    def _load_local(self, state: dict[str, Any]) -> None:
        self.local.load_state_dict(state["local"])
