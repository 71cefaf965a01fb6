"""One segment model for several instances: local river learners, a global model announced on Kafka.

With several ``segstream run`` instances in one consumer group, each instance
sees only the users of its partitions. Each keeps a local
:class:`~state.kmeans.OnlineKMeans` (river, exactly as in single-instance
mode) as a *summary* of its own users, and assigns users **only with the
global model**: a :class:`~state.segments.SegmentModel` that it has read back
from the model topic. The protocol, as plain messages
(:mod:`stream.runtime.model_sync` carries them over Kafka, schema
``segstream.model/1``; docs/scaling.md says it step by step, with timings):

1. **summaries**: every member (the leader too) seeds its local learner from
   its own first users and sends the learner's centres, each with a decayed
   count of the embeddings nearest to it, after each local consolidation and
   at least every third of ``silent_after_s`` (a ``heartbeat``: it keeps the
   member live but does not call for a merge). A summary is a state, not a
   delta; it names the member's input partitions and its events consumed.
2. **v1**: the leader (the owner of input partition 0) proposes version 1
   once the summaries cover every input partition, or ``first_wait_s`` after
   it first had ``k`` summary points: weighted k-means
   (:func:`state.summary_merge.cluster_summaries`) over every live member's
   centres, ids ``0..k-1``. Users that arrive before v1 are held (state
   kept, no segment).
3. **merge**: once per round of summaries (or after ``merge_wait_s``) the
   leader clusters the union of the live members' centres, weighted by their
   counts and seeded from the current centroids; ids carry over by
   :func:`state.identity.match_to_previous`, and what changed (born, split,
   merged, retired) travels in the record. Members silent for longer than
   ``silent_after_s`` are left out. The record names the events each member
   had consumed (``members``), so that the next leader does not merge again
   what a version already holds.
4. **first record wins**: a proposal takes effect only when read back from
   the single-partition model topic, and only the first record of a version
   is applied. Every member reads the same log in the same order, so all hold
   the same centroids for a version.

Members never move a global centroid: their local learners' centres are
private and only reach the model through a merge. A merge is deterministic
given its inputs (members sorted by id, seeds fixed by version), but which
summaries it sees depends on timing: replays use one instance.
This class is the protocol and its k-means flavour; :class:`~state.global_dbstream.GlobalDBSTREAM`
(``SEGSTREAM_CLUSTERER=dbstream``) changes only what a summary holds (micro-clusters) and how the
leader clusters their union (DBSTREAM's macro-clusters, :func:`state.summary_merge.connect_summaries`);
records name their ``clusterer`` and a member ignores those of another.

    >>> import numpy as np
    >>> from state.kmeans import OnlineKMeans
    >>> rng = np.random.default_rng(0)
    >>> blob = lambda c: rng.normal(c, 0.05, (40, 2)).astype(np.float32)
    >>> leader = GlobalKMeans(OnlineKMeans(2, 2, warmup_users=40), "a")
    >>> follower = GlobalKMeans(OnlineKMeans(2, 2, warmup_users=40), "b")
    >>> leader.add_warmup([f"a{i}" for i in range(40)], blob(0.0), event_time=1.0, events=40)
    >>> follower.add_warmup([f"b{i}" for i in range(40)], blob(5.0), event_time=1.0, events=40)
    >>> log = leader.outgoing(leader=True, partitions=[0], n_partitions=2)
    >>> log += follower.outgoing(leader=False, partitions=[1])
    >>> [m["kind"] for m in log]                      # each member's summary of its first users
    ['summary', 'summary']
    >>> for m in log:                                 # both read the model topic
    ...     _ = leader.receive(m), follower.receive(m)
    >>> v1, = leader.outgoing(leader=True)            # every partition covered: v1 from both summaries
    >>> v1["version"], v1["members"]
    (1, {'a': 40, 'b': 40})
    >>> _ = leader.receive(v1), follower.receive(v1)
    >>> sorted(np.round(follower.model.centroids[:, 0]).tolist())
    [0.0, 5.0]
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from state.identity import Lineage, match_to_previous
from state.kmeans import LineageEvent, OnlineKMeans
from state.segments import SegmentModel, WarmupBuffer, nearest
from state.summary_merge import cluster_summaries
from state.user_store import user_keys

__all__ = ["GlobalKMeans", "model_digest", "SCHEMA", "SUMMARY_FACTOR"]

SCHEMA = "segstream.model/1"
SUMMARY_FACTOR = 2  # a member's local learner keeps this many centres per global segment (its summary)
_MERGE_SEED = 20_240_611  # merges draw from rng([_MERGE_SEED, version]): any leader makes the same version


def model_digest(centroids: np.ndarray, segment_ids: np.ndarray) -> str:
    """Short SHA-256 of a model's centroids and ids (logged on apply: equal digests, equal assignments)."""
    h = hashlib.sha256(np.ascontiguousarray(centroids, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(segment_ids, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


# ----- the protocol ------------------------------------------------------------------
class GlobalKMeans(WarmupBuffer):
    """The segmenter interface of :class:`OnlineKMeans`, assigning with the announced global model.

    Its warm-up buffer holds every user updated before the first global model arrives.

    ``first_wait_s``: how long the leader waits for summaries covering every input partition before it
    proposes v1 from those it has. ``silent_after_s``: a member whose latest summary is older is left
    out of merges (members re-send theirs every third of it). ``clock``: wall-clock seconds (summaries
    carry the sender's ``sent_at``, so a silence is measured the same on every member)."""

    name = "kmeans-global"
    clusterer = "kmeans"  # named in every record: a member of another clusterer ignores it
    fixed_k = True  # every version has k segments (DBSTREAM's versions have as many as its density finds)

    def __init__(self, local: OnlineKMeans, instance_id: str, *, k: int | None = None, first_wait_s: float = 10.0,
                 silent_after_s: float = 300.0, weight_decay: float = 0.5, restarts: int = 8,
                 restart_gain: float = 0.02, merge_wait_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.local = local
        self.instance_id = instance_id
        self.k, self.dim = k or local.k, local.dim  # global segments; the local learner may keep more centres
        self.warmup_users = local.warmup_users
        self.update_every = int(getattr(local, "update_every_events", 0))  # the local learner's consolidation schedule
        self.first_wait_s = first_wait_s
        self.silent_after_s = silent_after_s
        self.merge_wait_s = merge_wait_s
        self.weight_decay = weight_decay
        self.restarts = restarts
        self.restart_gain = restart_gain
        self.clock = clock
        self.model: SegmentModel | None = None
        self.lineage: list[LineageEvent] = []
        self._warm: dict[str, np.ndarray] = {}  # users updated before the first global model
        self._counts = np.zeros(getattr(local, "k", 0), dtype=np.float64)  # decayed embeddings per local centre
        self._events = 0  # events this member has consumed (named in its summaries)
        self._summaries: dict[str, dict[str, Any]] = {}  # latest summary per member, as read from the topic
        # what is new is derived, never kept: a member's latest summary (not a heartbeat) covers more events
        # than the current version (or this leader's latest merge) holds of it, whoever proposed that version
        self._data_events: dict[str, int] = {}  # member -> events its latest summary (not a heartbeat) covers
        self._merged_events: dict[str, int] = {}  # member -> events of its summary the current version holds
        self._pending_since: float | None = None  # when a summary no version holds was first read (this clock)
        self._proposed = 0  # version of this instance's outstanding proposal (0: none)
        self._next_id = 0  # the next global segment id (carried by every model record)
        self._seq = 0
        self._last_summary: dict[str, Any] | None = None  # re-sent as a heartbeat
        self._last_sent = float("-inf")
        self._partitions: list[int] = []  # input partitions this member owns (named in its summaries)
        self._n_partitions = 0  # input partitions in all (0: unknown)
        self._first_wait_from: float | None = None  # when the leader first had k summary points for v1
        self._fresh_model: SegmentModel | None = None  # applied since the last tick
        self._event_time = float("-inf")
        self._outbox: list[dict[str, Any]] = []
        self.ignored = 0  # model records ignored (duplicate or older versions, wrong shape)

    # ----- the interface the pipeline uses --------------------------------------
    @property
    def warming(self) -> bool:
        return self.model is None or bool(self._warm)

    def add_warmup(self, user_ids: list[str], emb: np.ndarray, event_time: float = float("nan"),
                   events: int = 0) -> None:
        super().add_warmup(user_ids, emb, event_time)
        if event_time == event_time:
            self._event_time = max(self._event_time, event_time)
        if self.model is not None:
            return  # the model is here: the pipeline assigns, learns and ticks this batch next
        self._events += events
        if self.local.model is None:
            self.local.add_warmup(user_ids, emb)
            enough = len(self.local._warm) >= self._min_points and self._events >= self.update_every
            if self.local.ready() or enough:
                self._seed_local()
        elif len(emb):  # waiting for v1 with a seeded local learner: it keeps summarising this member's users
            self._learn_local(emb, user_keys(user_ids))
            if self.local.tick(events, self._time(), {}) is not None:
                self.local.drain_lineage()
                self._summarise()

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
        if len(emb) == 0:
            return
        if self.local.model is None:
            assert self.model is not None
            self._start_local(self.model)
        self._learn_local(emb, keys)

    def tick(self, n_events: int, event_time: float, users_per_segment: dict[int, int],
             population=None) -> SegmentModel | None:
        self._event_time = max(self._event_time, event_time)
        self._events += n_events
        # no users per segment: those held are counted per *global* id, so the local learner's
        # re-seeding goes by recent embeddings only
        if self.local.model is not None and self.local.tick(n_events, event_time, {}, population) is not None:
            self.local.drain_lineage()  # local ids are private to this instance
            self._summarise()
        fresh, self._fresh_model = self._fresh_model, None
        return fresh

    def drain_lineage(self) -> list[LineageEvent]:
        out, self.lineage = self.lineage, []
        return out

    # ----- the local summary (what a clusterer's subclass changes) ---------------------
    @property
    def _min_points(self) -> int:
        """Summary points needed before v1 (and users before a member seeds its learner early)."""
        return self.k

    @property
    def _match_cap(self) -> float:
        """The bound in embedding units on how far a centroid may move and keep its id (none for k-means)."""
        return float("inf")

    def _summary_body(self) -> dict[str, Any]:
        """The summary's points: the local centres and their counts (decayed once sent)."""
        assert self.local.model is not None
        body = {"centroids": np.ascontiguousarray(self.local.model.centroids, dtype="<f4").tobytes(),
                "weights": self._counts.tolist()}
        self._counts *= self.weight_decay
        return body

    def _cluster_live(self, live: dict[str, dict[str, Any]], previous: SegmentModel | None,
                      version: int) -> np.ndarray:
        """The merge: weighted k-means over every live member's centres, from ``previous``'s centroids."""
        x, w, _ = self._points(live)
        if previous is None:
            return cluster_summaries(x, w, self.k, rng=self._rng(version), restarts=self.restarts)
        return cluster_summaries(x, w, self.k, init=previous.centroids, rng=self._rng(version),
                                 restarts=self.restarts, restart_gain=self.restart_gain)

    def _time(self) -> float:
        return float(self._event_time) if np.isfinite(self._event_time) else 0.0

    def _learn_local(self, emb: np.ndarray, keys: np.ndarray | None) -> None:
        assert self.local.model is not None
        self.local.learn(emb, keys)
        self._counts += np.bincount(nearest(emb, self.local.model.centroids), minlength=self.local.k)

    def _seed_local(self) -> None:
        """Seed the local learner from this member's own first users and summarise them."""
        _, x = self.local.seed_model(self._time())
        self.local.drain_lineage()
        self._counts = np.bincount(nearest(x, self.local.model.centroids), minlength=self.local.k).astype(np.float64)
        self._summarise()

    def _start_local(self, model: SegmentModel) -> None:
        """v1 arrived before the local learner was seeded: from this member's own users when it holds
        enough of them, else from v1's centroids, repeated to the learner's size (its few users counted
        against them; the learner's consolidation re-seeds the copies no user is nearest to)."""
        if len(self.local._warm) >= self.local.k:
            self._seed_local()
            return
        _, x = self.local._warm_arrays()
        self.local.adopt(np.resize(model.centroids, (self.local.k, self.dim)), model.version, model.event_time)
        self._counts = np.zeros(self.local.k, np.float64)
        if len(x):
            self._counts += np.bincount(nearest(x, self.local.model.centroids), minlength=self.local.k)
            self._summarise()

    def _summarise(self) -> None:
        self._seq += 1
        now = self.clock()
        msg = {"schema": SCHEMA, "kind": "summary", "clusterer": self.clusterer, "instance": self.instance_id,
               "seq": self._seq, "based_on": 0 if self.model is None else self.model.version, "k": self.k,
               "dim": self.dim, **self._summary_body(), "events": int(self._events),
               "partitions": list(self._partitions), "event_time": self._time(), "sent_at": float(now)}
        self._outbox.append(msg)
        self._last_summary, self._last_sent = msg, now

    # ----- the protocol --------------------------------------------------------
    def outgoing(self, *, leader: bool, partitions: list[int] | None = None,
                 n_partitions: int | None = None) -> list[dict[str, Any]]:
        """Messages to send on the model topic now (summaries; proposals when ``leader``).

        ``partitions``: the input partitions this member owns now; ``n_partitions``: how many the input
        topic has (the leader waits for summaries covering them all before v1, up to ``first_wait_s``)."""
        if partitions is not None:
            self._partitions = sorted(int(p) for p in partitions)
        if n_partitions is not None:
            self._n_partitions = int(n_partitions)
        now = self.clock()
        if self._last_summary is not None and now - self._last_sent >= self.silent_after_s / 3:
            self._seq += 1  # heartbeat: the latest summary again, so a quiet member is not taken for dead
            msg = {**self._last_summary, "seq": self._seq, "sent_at": float(now), "partitions": list(self._partitions),
                   "heartbeat": True}
            self._outbox.append(msg)
            self._last_summary, self._last_sent = msg, now
        if not leader:
            self._first_wait_from = None
        elif not self._proposed:
            if self.model is None:
                self._propose_first(now)
            elif self._merge_due():
                self._merge()
        out, self._outbox = self._outbox, []
        for msg in out:
            if msg["kind"] == "summary":  # made during a batch: the partitions owned when it is sent
                msg["partitions"] = list(self._partitions)
        return out

    def silence(self) -> dict[str, float]:
        """Seconds since each member's latest summary was sent (the members this instance has read)."""
        now = self.clock()
        return {i: max(0.0, now - s["_at"]) for i, s in sorted(self._summaries.items())}

    def _live(self) -> dict[str, dict[str, Any]]:
        """The latest summary of every member not silent for longer than ``silent_after_s`` (a member
        that died or left stops sending and drops out)."""
        now = self.clock()
        return {i: s for i, s in sorted(self._summaries.items()) if now - s["_at"] <= self.silent_after_s}

    def _points(self, live: dict[str, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Every live member's centres and counts, members in id order; and the events each had consumed."""
        xs, ws = [np.zeros((0, self.dim), np.float32)], [np.zeros(0)]
        members: dict[str, int] = {}
        for i, s in live.items():
            w = np.asarray(s["weights"], np.float64)
            if w.sum() <= 0:
                continue
            xs.append(np.frombuffer(s["centroids"], "<f4").reshape(len(w), self.dim))
            ws.append(w)
            members[i] = int(s.get("events", 0))
        x, w = np.concatenate(xs), np.concatenate(ws)
        return x[w > 0], w[w > 0], members

    def _propose_first(self, now: float) -> None:
        """v1 once ``k`` summary points exist and every input partition's owner has sent a summary (or
        ``first_wait_s`` has passed since the leader first had ``k`` points)."""
        live = self._live()
        x, w, members = self._points(live)
        if len(x) < self._min_points:
            return
        if self._first_wait_from is None:
            self._first_wait_from = now
        covered = {int(p) for i in members for p in live[i].get("partitions", ())}
        everyone = self._n_partitions > 0 and covered >= set(range(self._n_partitions))
        if not everyone and now - self._first_wait_from < self.first_wait_s:
            return
        centroids = self._cluster_live(live, None, 1)
        if len(centroids) == 0:
            return
        ids = np.arange(len(centroids), dtype=np.int64)
        detail = f"seeded from the summaries of {len(members)} member(s)"
        self._propose(1, centroids, ids, len(ids), members, [Lineage("born", (int(i),), detail=detail) for i in ids])

    def _merge_due(self) -> bool:
        """At most one merge per round of summaries: when the leader's own summary, one from every live
        member, or one from a member the current version did not merge has arrived since the last
        merge (so versions follow traffic, not round trips, and a newcomer is merged at once); when a
        summary has waited ``merge_wait_s`` for the rest of its round (members whose partitions ran dry
        send nothing more: the last summaries of a log are merged too); or when a member the current
        version merged has fallen silent. Heartbeats are not new summaries."""
        live = set(self._live())
        if set(self._merged_events) - live:
            return True  # a member the current version merged fell silent: a version without it
        new = self._new_since_merge(live)
        if not new:
            return False
        if self.instance_id in new or not new <= set(self._merged_events):
            return True
        if self._pending_since is not None and self.clock() - self._pending_since >= self.merge_wait_s:
            return True  # a round that will not complete (the other members' partitions ran dry)
        return live <= new

    def _new_since_merge(self, live: set[str] | None = None) -> set[str]:
        """Live members whose latest summary covers more events than the current version holds of them."""
        live = set(self._live()) if live is None else live
        return {i for i in live if self._data_events.get(i, -1) > self._merged_events.get(i, -1)}

    def _note_pending(self) -> None:
        """Start the merge wait when a summary no version holds appears; stop it when none is left."""
        if not self._new_since_merge():
            self._pending_since = None
        elif self._pending_since is None:
            self._pending_since = self.clock()

    def _merge(self) -> None:
        m = self.model
        assert m is not None
        live = self._live()
        self._merged_events = {i: self._data_events.get(i, -1) for i in live}  # read back with the proposal
        self._pending_since = None
        x, _, members = self._points(live)
        if len(x) == 0:
            return
        centroids = self._cluster_live(live, m, m.version + 1)
        if len(centroids) == 0:
            return
        match = match_to_previous(m.centroids, m.segment_ids, centroids, next_id=self._next_id, cap=self._match_cap)
        if np.array_equal(match.ids, m.segment_ids) and np.array_equal(centroids, m.centroids):
            return  # the same model again: no version
        self._propose(m.version + 1, centroids, match.ids, match.next_id, members, match.events)

    @staticmethod
    def _rng(version: int) -> np.random.Generator:
        return np.random.default_rng([_MERGE_SEED, version])

    def _propose(self, version: int, centroids: np.ndarray, ids: np.ndarray, next_id: int,
                 members: dict[str, int], lineage: list[Lineage]) -> None:
        self._proposed = version
        self._outbox.append({
            "schema": SCHEMA, "kind": "model", "clusterer": self.clusterer, "version": version,
            "proposer": self.instance_id, "k": len(ids), "dim": self.dim, "segment_ids": [int(i) for i in ids],
            "centroids": np.ascontiguousarray(centroids, dtype="<f4").tobytes(),
            "event_time": self._time(), "instances": sorted(members), "members": dict(sorted(members.items())),
            "next_id": int(next_id),
            "lineage": [{"kind": e.kind, "segments": [int(s) for s in e.segments],
                         "parents": [int(s) for s in e.parents], "detail": e.detail or "global merge"} for e in lineage],
            "digest": model_digest(centroids, ids)})

    def receive(self, msg: dict[str, Any]) -> SegmentModel | None:
        """One record of the model topic, in log order; returns the model if this record was applied."""
        if (msg.get("dim") != self.dim or msg.get("clusterer", "kmeans") != self.clusterer
                or (self.fixed_k and msg.get("k") != self.k)):
            self.ignored += 1  # a member configured otherwise (clusterer, k or encoder)
            return None
        if msg.get("kind") == "summary":
            n = len(msg.get("weights") or ())
            if len(msg.get("centroids") or b"") != 4 * n * self.dim:
                self.ignored += 1
                return None
            member = str(msg["instance"])
            known = member in self._summaries
            self._summaries[member] = {**msg, "_at": float(msg.get("sent_at", self.clock()))}
            if not (msg.get("heartbeat") and known):  # a heartbeat says "alive", not "new data": no merge for it
                self._data_events[member] = int(msg.get("events", 0))
                self._note_pending()
            return None
        if msg.get("kind") != "model":
            self.ignored += 1
            return None
        version = int(msg["version"])
        if self.model is not None and version <= self.model.version:
            self.ignored += 1  # a later record of a version already applied: the first one won
            return None
        ids = np.asarray(msg["segment_ids"], dtype=np.int64)
        if len(ids) == 0 or len(msg.get("centroids") or b"") != 4 * len(ids) * self.dim:
            self.ignored += 1
            return None
        centroids = np.frombuffer(msg["centroids"], "<f4").reshape(len(ids), self.dim).copy()
        event_time = float(msg["event_time"])
        first = self.model is None
        self.model = SegmentModel(version, centroids, ids, event_time)
        self._next_id = int(msg.get("next_id", int(ids.max()) + 1))
        merged = msg.get("members")
        if not isinstance(merged, dict):  # a record that names its instances only: it holds what is known of them
            merged = {i: self._data_events.get(i, -1) for i in msg.get("instances") or ()}
        self._merged_events = {str(i): int(n) for i, n in merged.items()}
        self._note_pending()
        mine = msg.get("proposer") == self.instance_id and self._proposed == version  # proposed in this life
        if self._proposed and version >= self._proposed:
            self._proposed = 0
        lineage = msg.get("lineage")
        if lineage is None and first:  # a record written before versions carried their lineage
            lineage = [{"kind": "born", "segments": [int(i)], "parents": [], "detail": "seeded"} for i in ids]
        self.lineage += [LineageEvent(e["kind"], tuple(e["segments"]), version, event_time, tuple(e.get("parents", ())),
                                      e.get("detail", ""), announce=mine) for e in lineage or ()]
        if first and self.local.model is None and (self._warm or len(self.local._warm)):
            self._start_local(self.model)
        self._fresh_model = self.model
        return self.model

    # ----- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The local learner and the pending users; the global model itself lives on the model topic."""
        return {"name": self.name, "local": self.local.state_dict(), **self._warm_state("pending"),
                "counts": self._counts.copy(), "events": self._events, "seq": self._seq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint holds a {state.get('name')!r} segmenter, not {self.name!r}")
        self._load_warm(state, "pending")
        self._events = int(state.get("events", 0))
        self._seq = max(self._seq, int(state.get("seq", 0)))
        self._load_local(state)

    def _load_local(self, state: dict[str, Any]) -> None:
        """The local learner and its counts, from :meth:`state_dict`."""
        counts = np.asarray(state["counts"], np.float64)
        local = state["local"].get("model")
        if len(counts) != self.local.k or (local is not None and len(local["centroids"]) != self.local.k):
            # written with a learner of another size (before summaries had 2k centres): the local summary
            # starts again from this member's users, the global model and the pending users stay
            return
        self.local.load_state_dict(state["local"])
        self._counts = counts.copy()
