"""DBSTREAM segmenter: river ``DBSTREAM`` as the learner, reclustered on a schedule, ids kept stable.

River's DBSTREAM reclusters lazily and renumbers its macro-clusters each time
(river #891), and ``predict_one`` walks every micro-cluster (river #811,
#1086). Here river only *learns* (a bounded, seeded sample of each
micro-batch); every ``recluster_events`` events the macro-cluster centres are
read once, matched to the previous segments (:func:`state.identity.identify`,
Hungarian on centre distance, the same matching as k-means) and published as a
:class:`SegmentModel`.

Not every macro-cluster is a segment: DBSTREAM keeps a fringe of light
micro-clusters (noise, stragglers of a fading region) that connect and
disconnect from one recluster to the next. A macro-cluster becomes a *new*
segment only when it carries ``min_share`` of the macro-clusters' total weight,
and a segment already published stays one while it carries half of that
(hysteresis on birth and end, so that a segment near the bound does not
flicker); the heaviest macro-cluster is always a segment.
Users are then assigned to the nearest macro-centre in one numpy pass per
micro-batch, like k-means (:func:`state.segments.assign`).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> blobs = np.concatenate([rng.normal(c, 0.02, (60, 2)) for c in (0.0, 1.0)]).astype(np.float32)
    >>> db = OnlineDBSTREAM(dim=2, warmup_users=120, radius=0.1, seed=0)
    >>> db.add_warmup([f"u{i}" for i in range(120)], blobs)
    >>> _ = db.seed_model(event_time=0.0)
    >>> db.model.k, sorted(np.abs(np.round(db.model.centroids[:, 0], 1)).tolist())
    (2, [0.0, 1.0])
    >>> [e.kind for e in db.drain_lineage()]
    ['born', 'born']
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import cluster

from state.identity import identify, match_thresholds
from state.kmeans import LineageEvent
from state.segments import SegmentModel, WarmupBuffer, nearest, squared_distances

__all__ = ["OnlineDBSTREAM", "heavy_enough"]


def heavy_enough(centres: np.ndarray, weights: np.ndarray, previous: np.ndarray | None, *, min_share: float,
                 cap: float) -> np.ndarray:
    """Which macro-clusters are segments (rows kept): ``min_share`` of the total weight, or half of it
    for one near a segment of ``previous`` (its own Voronoi cell, within ``cap``); the heaviest always.

    >>> heavy_enough(np.array([[0.0], [1.0], [5.0]]), np.array([90.0, 2.0, 8.0]), None, min_share=0.05, cap=1.0)
    array([ True, False,  True])
    """
    share = weights / max(float(weights.sum()), 1e-12)
    keep = share >= min_share
    if previous is not None and len(centres) and len(previous):
        near = nearest(centres, previous)
        limit = match_thresholds(previous, cap=cap)[near]
        dist = np.sqrt(squared_distances(centres, previous)[np.arange(len(centres)), near])
        keep |= (dist <= limit) & (share >= 0.5 * min_share)
    if len(keep):
        keep[int(np.argmax(weights))] = True
    return keep


class OnlineDBSTREAM(WarmupBuffer):
    name = "dbstream"

    def __init__(self, dim: int, *, radius: float = 0.3, fading_factor: float = 0.01, warmup_users: int = 200,
                 learn_sample: int = 32, recluster_events: int = 5000, seed: int = 0, match_factor: float = 2.0,
                 cleanup_interval: float = 2.0, intersection_factor: float = 0.3, minimum_weight: float = 1.0,
                 min_share: float = 0.03) -> None:
        self.dim = dim
        self.min_share = min_share
        self.learn_sample = learn_sample
        self.recluster_events = recluster_events
        self.warmup_users = warmup_users
        self.max_match_distance = match_factor * radius
        self.learner = cluster.DBSTREAM(clustering_threshold=radius, fading_factor=fading_factor,
                                        cleanup_interval=cleanup_interval, intersection_factor=intersection_factor,
                                        minimum_weight=minimum_weight)
        self.model: SegmentModel | None = None
        self.lineage: list[LineageEvent] = []
        self._rng = np.random.default_rng([seed, 11])
        self._warm: dict[str, np.ndarray] = {}
        self._since_update = 0
        self._next_id = 0

    def seed_model(self, event_time: float) -> tuple[list[str], np.ndarray]:
        users, x = self._take_warm()
        self._learn_rows(x[self._rng.permutation(len(x))])
        model = self._recluster(event_time)
        if model is None:  # no macro-cluster yet: one segment at the mean
            self.model = SegmentModel(1, x.mean(axis=0, keepdims=True), np.array([0]), event_time)
            self._next_id = 1
            self.lineage.append(LineageEvent("born", (0,), 1, event_time, detail="seeded (no macro-cluster yet)"))
        return users, x

    def _learn_rows(self, x: np.ndarray) -> None:
        learn = self.learner.learn_one
        for row in x.tolist():
            learn(dict(enumerate(row)))

    def learn(self, emb: np.ndarray, keys: np.ndarray | None = None) -> None:
        """Feed a bounded, seeded sample to river (``keys`` unused: micro-clusters keep no per-user row)."""
        if len(emb) == 0:
            return
        if len(emb) > self.learn_sample:
            emb = emb[np.sort(self._rng.choice(len(emb), self.learn_sample, replace=False))]
        self._learn_rows(emb)

    def macro_centres(self) -> np.ndarray:
        """Recluster now (river does it on reading ``centers``) and return the centres [m, dim]."""
        return self.macro_clusters()[0]

    def macro_clusters(self) -> tuple[np.ndarray, np.ndarray]:
        """Recluster now; the macro-clusters' centres [m, dim] and weights [m]."""
        c = self.learner.clusters
        if not c:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float64)
        keys = sorted(c)
        centres = np.array([[c[j].center.get(i, 0.0) for i in range(self.dim)] for j in keys], dtype=np.float32)
        return centres, np.array([c[j].weight for j in keys], dtype=np.float64)

    def _segments(self, centres: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The macro-clusters heavy enough to be segments (see the module docstring): kept rows."""
        previous = None if self.model is None else self.model.centroids
        return heavy_enough(centres, weights, previous, min_share=self.min_share, cap=self.max_match_distance)

    def adopt(self, centers: np.ndarray, version: int, event_time: float) -> None:
        """Start the recluster schedule from given centres as model ``version`` (global mode: a member
        with no user of its own yet when the first global version arrives, :mod:`state.global_dbstream`)."""
        self.model = SegmentModel(version, centers.astype(np.float32), np.arange(len(centers), dtype=np.int64),
                                  event_time)
        self._next_id = max(self._next_id, len(centers))

    def micro_summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The micro-clusters as a summary of this learner's users: centres [m, dim], weights faded to
        now [m], and the pairs (rows) river's reclustering connects (shared density over
        ``intersection_factor`` of the pair's mean weight, both heavier than ``minimum_weight``)."""
        lr = self.learner
        ids = sorted(lr._micro_clusters)
        row = {j: r for r, j in enumerate(ids)}
        mcs = [lr._micro_clusters[j] for j in ids]
        centres = np.array([[mc.center.get(d, 0.0) for d in range(self.dim)] for mc in mcs],
                           dtype=np.float32).reshape(len(mcs), self.dim)
        fade = lr.fading_factor
        weights = np.array([mc.weight * 2.0 ** (-fade * (lr._time_stamp - mc.last_update)) for mc in mcs],
                           dtype=np.float64)
        adjacency = lr._generate_weighted_adjacency_matrix()
        links = sorted((row[i], row[j]) for i, near in adjacency.items() for j in near if i in row and j in row)
        return centres, weights, np.array(links, dtype=np.int64).reshape(len(links), 2)

    def _recluster(self, event_time: float) -> SegmentModel | None:
        centres, weights = self.macro_clusters()
        if len(centres) == 0:
            return None
        centres = centres[self._segments(centres, weights)]
        version = 1 if self.model is None else self.model.version + 1
        m = identify(self.model, centres, next_id=self._next_id, cap=self.max_match_distance)
        self._next_id = m.next_id
        self.lineage += [LineageEvent(e.kind, e.segments, version, event_time, e.parents, e.detail) for e in m.events]
        self.model = SegmentModel(version, centres, m.ids, event_time)
        return self.model

    def tick(self, n_events: int, event_time: float, users_per_segment: dict[int, int],
             population: Any = None) -> SegmentModel | None:
        if self.model is None:
            return None
        self._since_update += n_events
        if self._since_update < self.recluster_events:
            return None
        self._since_update = 0
        return self._recluster(event_time)

    def drain_lineage(self) -> list[LineageEvent]:
        out, self.lineage = self.lineage, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (checkpoints): model, river's micro-clusters and densities, RNG.

        Plain values and numpy arrays only (no pickle); river's floats are kept as float64 so that a
        restore is bit-exact. :meth:`load_state_dict` is its inverse.
        """
        import json

        m = self.model
        lr = self.learner
        mc_ids = sorted(lr._micro_clusters)
        mcs = [lr._micro_clusters[i] for i in mc_ids]
        pairs = [(i, j, v, lr.s_t[i][j]) for i, row in lr.s.items() for j, v in row.items()]
        return {
            "name": self.name,
            "model": None if m is None else {
                "version": m.version, "centroids": m.centroids, "segment_ids": m.segment_ids,
                "event_time": m.event_time},
            "next_id": self._next_id,
            "since_update": self._since_update,
            "rng": json.dumps(self._rng.bit_generator.state),
            **self._warm_state(),
            "time_stamp": int(lr._time_stamp),
            "mc_ids": np.array(mc_ids, dtype=np.int64),
            "mc_centers": np.array([[mc.center.get(d, 0.0) for d in range(self.dim)] for mc in mcs],
                                   dtype=np.float64).reshape(len(mcs), self.dim),
            "mc_last_update": np.array([mc.last_update for mc in mcs], dtype=np.float64),
            "mc_weight": np.array([mc.weight for mc in mcs], dtype=np.float64),
            "s_pairs": np.array([(i, j) for i, j, _, _ in pairs], dtype=np.int64).reshape(len(pairs), 2),
            "s_values": np.array([[v, t] for _, _, v, t in pairs], dtype=np.float64).reshape(len(pairs), 2),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (same dim and settings)."""
        import json

        from river.cluster.dbstream import DBSTREAMMicroCluster

        if state.get("name", self.name) != self.name:
            raise ValueError(f"checkpoint holds a {state['name']!r} segmenter, not {self.name!r}")
        m = state["model"]
        self.model = None if m is None else SegmentModel(
            int(m["version"]), np.asarray(m["centroids"], np.float32), np.asarray(m["segment_ids"], np.int64),
            float(m["event_time"]))
        self._next_id = int(state["next_id"])
        self._since_update = int(state["since_update"])
        self._rng.bit_generator.state = json.loads(state["rng"])
        self._load_warm(state)
        lr = self.learner
        lr._time_stamp = int(state["time_stamp"])
        lr._micro_clusters = {}
        for i, c, t, w in zip(np.asarray(state["mc_ids"]).tolist(), np.asarray(state["mc_centers"]).tolist(),
                              np.asarray(state["mc_last_update"]).tolist(), np.asarray(state["mc_weight"]).tolist()):
            lr._micro_clusters[i] = DBSTREAMMicroCluster(x=dict(enumerate(c)), last_update=int(t) if float(t).is_integer() else t,
                                                         weight=w)
        lr.s, lr.s_t = {}, {}
        for (i, j), (v, t) in zip(np.asarray(state["s_pairs"]).tolist(), np.asarray(state["s_values"]).tolist()):
            lr.s.setdefault(i, {})[j] = v
            lr.s_t.setdefault(i, {})[j] = int(t) if float(t).is_integer() else t
        lr.clustering_is_up_to_date = False
        self.lineage = []
