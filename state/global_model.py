"""One segment model for several instances: local river learners, a global model announced on Kafka.

With several ``segstream run`` instances in one consumer group, each instance
sees only the users of its partitions. Each keeps a local
:class:`~state.kmeans.OnlineKMeans` (river, exactly as in single-instance
mode) but assigns users **only with the global model**: a
:class:`~state.segments.SegmentModel` that it has read back from the model
topic. The protocol, as plain messages (:mod:`stream.runtime.model_sync` carries them
over Kafka, schema ``segstream.model/1``):

1. **v1**: the leader (the instance that owns partition 0 of the input topic)
   seeds its local learner from its own warm-up users and proposes those
   centres as version 1, with segment ids ``0..k-1``. Other instances keep
   their users pending (state is kept, no segment yet) until v1 arrives; their
   local learners then start from v1's centres, so that every learner's
   centre ``j`` starts as global segment ``j``.
2. **summaries**: every instance sends its local learner's centres and, per
   centre, a decayed count of the embeddings nearest to it, each time its
   local model is consolidated (every ``SEGSTREAM_MODEL_UPDATE_EVENTS`` of its
   own events). A summary is a state, not a delta: the latest one per
   instance is what counts.
3. **merge**: once per round of summaries (its own, or one from every live
   instance, has arrived since the last merge), the leader matches each
   instance's centres to the global segments (Hungarian assignment on
   distance, :func:`match_to_global`) and proposes version ``v+1`` whose
   centroid ``g`` is the count-weighted mean of the centres matched to ``g``
   (a segment no instance saw keeps its centroid). Summaries older than
   ``stale_merges`` merges (an instance that died) are left out.
4. **first record wins**: a proposal takes effect only when it is read back
   from the (single-partition) model topic, and only the first record with
   version ``v`` is applied; later ones (a leader that lost its partitions but
   has not noticed yet) are ignored. Every instance reads the same log in the
   same order, so all of them hold the same centroids for a version, and no
   segment event names a version that is not on the topic.

Segment ids are global and fixed after v1 (``k`` stays constant), so the
stability rules of single-instance mode (hysteresis, dwell) apply unchanged.
Global mode is not replay-deterministic: which summaries a merge sees depends
on timing. Replays use one instance.

    >>> import numpy as np
    >>> from state.kmeans import OnlineKMeans
    >>> rng = np.random.default_rng(0)
    >>> blobs = np.concatenate([rng.normal(c, 0.05, (40, 2)) for c in (0.0, 1.0)]).astype(np.float32)
    >>> leader = GlobalKMeans(OnlineKMeans(2, 2, warmup_users=80, update_every_events=100), "a")
    >>> follower = GlobalKMeans(OnlineKMeans(2, 2, warmup_users=80, update_every_events=100), "b")
    >>> leader.add_warmup([f"u{i}" for i in range(80)], blobs, event_time=1.0)
    >>> follower.add_warmup(["x"], blobs[:1], event_time=1.0)
    >>> log = leader.outgoing(leader=True)          # the v1 proposal
    >>> [m["kind"] for m in log], follower.ready()
    (['model'], False)
    >>> for m in log:                               # both read the model topic
    ...     _ = leader.receive(m), follower.receive(m)
    >>> follower.ready(), follower.model.version, follower.seed_model(1.0)[0]
    (True, 1, ['x'])
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from state.kmeans import LineageEvent, OnlineKMeans
from state.segments import SegmentModel, WarmupBuffer, nearest, squared_distances

__all__ = ["GlobalKMeans", "match_to_global", "merge_summaries", "model_digest", "SCHEMA"]

SCHEMA = "segstream.model/1"


def model_digest(centroids: np.ndarray, segment_ids: np.ndarray) -> str:
    """Short SHA-256 of a model's centroids and ids (logged on apply: equal digests, equal assignments)."""
    h = hashlib.sha256(np.ascontiguousarray(centroids, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(segment_ids, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def match_to_global(local: np.ndarray, global_centroids: np.ndarray) -> np.ndarray:
    """Global index of each local centre: Hungarian assignment on squared distance (one-to-one)."""
    rows, cols = linear_sum_assignment(squared_distances(local, global_centroids).astype(np.float64))
    out = np.full(len(local), -1, dtype=np.int64)
    out[rows] = cols
    return out


def merge_summaries(global_centroids: np.ndarray, summaries: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Count-weighted mean of the matched local centres per global segment.

    ``summaries``: (centres [k, dim], weights [k]) per instance. A global segment
    that no summary weighs keeps its centroid.

    >>> g = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    >>> a = (np.array([[9.0, 0.0], [1.0, 0.0]], np.float32), np.array([1.0, 3.0]))  # renumbered locally
    >>> b = (np.array([[3.0, 0.0], [11.0, 0.0]], np.float32), np.array([1.0, 0.0]))
    >>> merge_summaries(g, [a, b]).tolist()
    [[1.5, 0.0], [9.0, 0.0]]
    """
    k, dim = global_centroids.shape
    sums = np.zeros((k, dim), dtype=np.float64)
    weight = np.zeros(k, dtype=np.float64)
    for centres, w in summaries:
        gi = match_to_global(centres, global_centroids)
        ok = gi >= 0
        np.add.at(sums, gi[ok], centres[ok].astype(np.float64) * w[ok, None])
        np.add.at(weight, gi[ok], w[ok])
    out = global_centroids.astype(np.float64).copy()
    seen = weight > 0
    out[seen] = sums[seen] / weight[seen, None]
    return out.astype(np.float32)


class GlobalKMeans(WarmupBuffer):
    """The segmenter interface of :class:`OnlineKMeans`, assigning with the announced global model.

    Its warm-up buffer holds every user updated before the first global model arrives."""

    name = "kmeans-global"

    def __init__(self, local: OnlineKMeans, instance_id: str, *, stale_merges: int = 10,
                 weight_decay: float = 0.5) -> None:
        self.local = local
        self.instance_id = instance_id
        self.k, self.dim = local.k, local.dim
        self.stale_merges = stale_merges
        self.weight_decay = weight_decay
        self.model: SegmentModel | None = None
        self.lineage: list[LineageEvent] = []
        self._warm: dict[str, np.ndarray] = {}  # users updated before the first global model
        self._counts = np.zeros(self.k, dtype=np.float64)  # decayed embeddings per local centre
        self._summaries: dict[str, dict[str, Any]] = {}  # latest summary per instance
        self._merges = 0  # merges made by this instance (the age of a summary is counted in merges)
        self._new_since_merge: set[str] = set()  # instances with a summary newer than the last merge
        self._proposed = 0  # version of this instance's outstanding proposal (0: none)
        self._seq = 0
        self._fresh_model: SegmentModel | None = None  # applied since the last tick
        self._event_time = float("-inf")
        self._outbox: list[dict[str, Any]] = []
        self._held = 0  # user updates held back while waiting for the first global model
        self.ignored = 0  # model records ignored (duplicate or older versions, wrong shape)

    # ----- the interface the pipeline uses --------------------------------------
    @property
    def warming(self) -> bool:
        return self.model is None or bool(self._warm)

    def add_warmup(self, user_ids: list[str], emb: np.ndarray, event_time: float = float("nan")) -> None:
        super().add_warmup(user_ids, emb, event_time)
        self._held += len(user_ids)  # counted towards the first summary once the model is there
        if event_time == event_time:
            self._event_time = max(self._event_time, event_time)
        if self.local.warming:
            self.local.add_warmup(user_ids, emb)

    def forget(self, user_id: str) -> None:
        super().forget(user_id)
        self.local.forget(user_id)

    def erase(self, keys: np.ndarray) -> None:
        self.local.erase(keys)

    def ready(self) -> bool:
        return self.model is not None

    def seed_model(self, event_time: float) -> tuple[list[str], np.ndarray]:
        """The users held back until the global model arrived, to be assigned with it."""
        return self._take_warm()

    def learn(self, emb: np.ndarray, keys: np.ndarray | None = None) -> None:
        if len(emb) == 0 or self.local.model is None:
            return
        self.local.learn(emb, keys)
        near = nearest(emb, self.local.model.centroids)
        self._counts += np.bincount(near, minlength=self.k)

    def tick(self, n_events: int, event_time: float, users_per_segment: dict[int, int],
             population=None) -> SegmentModel | None:
        self._event_time = max(self._event_time, event_time)
        n_events, self._held = n_events + self._held, 0
        # no users per segment: those held are counted per *global* id, so the local learner's
        # re-seeding goes by recent embeddings only
        local = self.local.tick(n_events, event_time, {}, population)
        self.local.drain_lineage()  # local ids are private to this instance
        if local is not None and self.model is not None:
            self._seq += 1
            self._outbox.append({
                "schema": SCHEMA, "kind": "summary", "instance": self.instance_id, "seq": self._seq,
                "based_on": self.model.version, "k": self.k, "dim": self.dim,
                "centroids": local.centroids.astype("<f4").tobytes(), "weights": self._counts.tolist(),
                "event_time": float(event_time)})
            self._counts *= self.weight_decay
        fresh, self._fresh_model = self._fresh_model, None
        return fresh

    def drain_lineage(self) -> list[LineageEvent]:
        out, self.lineage = self.lineage, []
        return out

    # ----- the protocol --------------------------------------------------------
    def outgoing(self, *, leader: bool) -> list[dict[str, Any]]:
        """Messages to send on the model topic now (summaries; proposals when ``leader``)."""
        if leader and not self._proposed:
            if self.model is None:
                if self.local.ready():
                    self.local.seed_model(self._event_time)
                if self.local.model is not None:
                    self._propose(1, self.local.model.centroids, np.arange(self.k, dtype=np.int64), [self.instance_id])
            elif self._merge_due():
                self._merge()
        out, self._outbox = self._outbox, []
        return out

    def _merge_due(self) -> bool:
        """At most one merge per round of summaries: when the leader's own summary or one from every
        live instance has arrived since the last merge (so versions follow traffic, not round trips)."""
        new = self._new_since_merge
        if not new:
            return False
        if self.instance_id in new:
            return True
        return set(self._live()) <= new

    def _live(self) -> dict[str, dict[str, Any]]:
        """Summaries received within the last ``stale_merges`` merges (an instance that stopped
        sending, because it died or lost its partitions, drops out)."""
        return {i: s for i, s in self._summaries.items() if s["_merges_at"] >= self._merges - self.stale_merges}

    def _merge(self) -> None:
        assert self.model is not None
        v = self.model.version
        live = self._live()
        self._merges += 1
        parts = [(np.frombuffer(s["centroids"], "<f4").reshape(self.k, self.dim), np.asarray(s["weights"], np.float64))
                 for s in live.values()]
        parts = [(c, w) for c, w in parts if w.sum() > 0]
        self._new_since_merge = set()
        if not parts:
            return
        centroids = merge_summaries(self.model.centroids, parts)
        self._propose(v + 1, centroids, self.model.segment_ids, sorted(live))

    def _propose(self, version: int, centroids: np.ndarray, ids: np.ndarray, instances: list[str]) -> None:
        self._proposed = version
        self._outbox.append({
            "schema": SCHEMA, "kind": "model", "version": version, "proposer": self.instance_id,
            "k": self.k, "dim": self.dim, "segment_ids": [int(i) for i in ids],
            "centroids": np.ascontiguousarray(centroids, dtype="<f4").tobytes(),
            "event_time": float(self._event_time if np.isfinite(self._event_time) else 0.0),
            "instances": instances, "digest": model_digest(centroids, ids)})

    def receive(self, msg: dict[str, Any]) -> SegmentModel | None:
        """One record of the model topic, in log order; returns the model if this record was applied."""
        if msg.get("k") != self.k or msg.get("dim") != self.dim:
            self.ignored += 1
            return None
        if msg.get("kind") == "summary":
            self._summaries[str(msg["instance"])] = {**msg, "_merges_at": self._merges}
            self._new_since_merge.add(str(msg["instance"]))
            return None
        if msg.get("kind") != "model":
            self.ignored += 1
            return None
        version = int(msg["version"])
        if self.model is not None and version <= self.model.version:
            self.ignored += 1  # a later record of a version already applied: the first one won
            return None
        centroids = np.frombuffer(msg["centroids"], "<f4").reshape(self.k, self.dim).copy()
        ids = np.asarray(msg["segment_ids"], dtype=np.int64)
        first = self.model is None
        self.model = SegmentModel(version, centroids, ids, float(msg["event_time"]))
        if self._proposed and version >= self._proposed:
            self._proposed = 0
        if first:
            self.local.adopt(centroids, version, self.model.event_time)
            if msg.get("proposer") == self.instance_id:
                self.lineage += [LineageEvent("born", (int(i),), version, float(msg["event_time"]), detail="seeded")
                                 for i in ids]
        self._fresh_model = self.model
        return self.model

    # ----- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The local learner and the pending users; the global model itself lives on the model topic."""
        return {"name": self.name, "local": self.local.state_dict(), **self._warm_state("pending"),
                "counts": self._counts.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint holds a {state.get('name')!r} segmenter, not {self.name!r}")
        self.local.load_state_dict(state["local"])
        self._load_warm(state, "pending")
        self._counts = np.asarray(state["counts"], np.float64).copy()
        if self.model is not None and self.local.model is None:
            self.local.adopt(self.model.centroids, self.model.version, self.model.event_time)
