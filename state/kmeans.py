"""Online k-means segmenter: river ``KMeans`` as the learner, seeded so it does not collapse.

River's KMeans starts from random Gaussian centres and, on real embeddings,
ends up using two or three of eight clusters. Here the first
``warmup_users`` users' embeddings are buffered, seeded with k-means++ and
refined with Lloyd iterations (best of several seeded restarts), and the result is written into river's
centres; river then keeps learning from a bounded, seeded sample of each
micro-batch. Every ``update_every_events`` events the learner's centres are
published as a new :class:`~state.segments.SegmentModel` version, after a
consolidation step over recent embeddings (see :meth:`OnlineKMeans._publish`).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> blobs = np.concatenate([rng.normal(c, 0.05, (50, 2)) for c in (0.0, 1.0, 2.0)]).astype(np.float32)
    >>> km = OnlineKMeans(k=3, dim=2, warmup_users=150, seed=0)
    >>> km.add_warmup([f"u{i}" for i in range(150)], blobs)
    >>> km.ready()
    True
    >>> users, emb = km.seed_model(event_time=0.0)
    >>> (np.sort(km.model.centroids[:, 0]).round(1) + 0.0).tolist()
    [0.0, 1.0, 2.0]
    >>> km.model.version, km.model.segment_ids.tolist()
    (1, [0, 1, 2])
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
from river import cluster

from state.identity import identify
from state.segments import SegmentModel, WarmupBuffer, best_of_restarts, inertia, kmeans_plus_plus, lloyd, nearest, squared_distances
from state.user_store import user_keys

__all__ = ["OnlineKMeans", "LineageEvent"]


@dataclass(frozen=True)
class LineageEvent:
    """Why a segment id appeared or disappeared (``born``, ``retired``, ``merged``, ``split``)."""

    kind: str
    segments: tuple[int, ...]
    model_version: int
    event_time: float
    parents: tuple[int, ...] = ()
    detail: str = ""
    # False: this instance knows the event (its users of an ended segment are re-assigned) but another
    # one publishes it (global model: the leader that proposed the version, state.global_model)
    announce: bool = True


@dataclass
class _Recent:
    """Ring buffer of recent embeddings (candidates for re-seeding dead centres), each row tagged with
    its user's key (``state.user_store.user_keys``; 0: unknown) so that an erasure can drop it."""

    size: int
    dim: int
    data: np.ndarray = field(init=False)
    keys: np.ndarray = field(init=False)
    n: int = 0

    def __post_init__(self) -> None:
        self.data = np.zeros((self.size, self.dim), dtype=np.float32)
        self.keys = np.zeros(self.size, dtype=np.uint64)

    def drop(self, keys: np.ndarray) -> int:
        """Remove the rows of these users; the others stay, oldest first. Returns how many went.

        >>> r = _Recent(3, 1); r.add(np.arange(4, dtype=np.float32)[:, None], np.array([1, 2, 1, 3], np.uint64))
        >>> r.drop(np.array([1], np.uint64)), r.view().ravel().tolist(), r.keys[: r.n].tolist()
        (1, [1.0, 3.0], [2, 3])
        """
        m = min(self.n, self.size)
        order = (self.n + np.arange(m)) % self.size if self.n > self.size else np.arange(m)
        hit = np.isin(self.keys[order], keys)
        if not hit.any():
            return 0
        kept = order[~hit]
        self.data[: len(kept)] = self.data[kept]
        self.keys[: len(kept)] = self.keys[kept]
        self.data[len(kept):] = 0.0
        self.keys[len(kept):] = 0
        self.n = len(kept)
        return int(hit.sum())

    def add(self, x: np.ndarray, keys: np.ndarray | None = None) -> None:
        """Append rows (vectorised: one fancy-indexed write, no per-row loop).

        >>> r = _Recent(3, 1); r.add(np.arange(5, dtype=np.float32)[:, None]); r.view().ravel().tolist()
        [2.0, 3.0, 4.0]
        >>> r.add(np.array([[9.0]], np.float32)); r.view().ravel().tolist()   # wraps: oldest row replaced
        [9.0, 3.0, 4.0]
        """
        x = x[-self.size :]
        m = len(x)
        if m == 0:
            return
        at = (self.n + np.arange(m)) % self.size
        self.data[at] = x
        self.keys[at] = 0 if keys is None else keys[-self.size :]
        self.n += m

    def view(self) -> np.ndarray:
        return self.data[: min(self.n, self.size)]


class OnlineKMeans(WarmupBuffer):
    name = "kmeans"

    def __init__(self, k: int, dim: int, *, learning_rate: float = 0.02, warmup_users: int = 200,
                 learn_sample: int = 32, update_every_events: int = 5000, seed: int = 0,
                 recent_size: int = 4096, refine_iterations: int = 20, min_share_factor: float = 0.25,
                 seed_restarts: int = 8, restart_gain: float = 0.0,
                 held_share_factor: float = 0.25, max_reseeds: int = 8) -> None:
        if warmup_users < k:
            raise ValueError("warmup_users must be >= k")
        self.k = k
        self.dim = dim
        self.learn_sample = learn_sample
        self.update_every_events = update_every_events
        self.warmup_users = warmup_users
        self.learner = cluster.KMeans(n_clusters=k, halflife=learning_rate, seed=seed)
        self.model: SegmentModel | None = None
        self.lineage: list[LineageEvent] = []  # pending, drained by the pipeline
        self._rng = np.random.default_rng([seed, 7])
        self._warm: dict[str, np.ndarray] = {}
        self._since_update = 0
        self._next_id = 0
        self._recent = _Recent(recent_size, dim)
        self.refine_iterations = refine_iterations
        self.seed_restarts = seed_restarts
        self.min_share_factor = min_share_factor
        self.restart_gain = restart_gain
        self.held_share_factor = held_share_factor
        # re-seeds per publication: each costs a Lloyd pass over the users sample; at k = 64 on 8 planted
        # groups nearly every centre starves in turn, and 64 rounds took 74% of the run (py-spy)
        self.max_reseeds = max_reseeds
        self._born: dict[int, int] = {}  # segment id -> model version it was born in

    # ----- warm-up (state.segments.WarmupBuffer) -----------------------------
    def add_warmup(self, user_ids: list[str], emb: np.ndarray, event_time: float = float("nan"),
                   events: int = 0) -> None:
        super().add_warmup(user_ids, emb, event_time)
        self._recent.add(emb, user_keys(user_ids))  # warm-up only: a bounded number of ids to hash

    def seed_model(self, event_time: float) -> tuple[list[str], np.ndarray]:
        """Seed from the warm-up buffer; returns the buffered users and embeddings to assign."""
        users, x = self._take_warm()
        centers = best_of_restarts(x, self.k, self._rng, self.seed_restarts)
        self._set_learner_centres(centers)
        ids = np.arange(self.k, dtype=np.int64)
        self._next_id = self.k
        self.model = SegmentModel(1, centers, ids, event_time)
        self.lineage += [LineageEvent("born", (int(i),), 1, event_time, detail="seeded") for i in ids]
        return users, x

    def adopt(self, centers: np.ndarray, version: int, event_time: float) -> None:
        """Start from given centres as model ``version``, ids ``0..k-1``, warm-up buffer dropped
        (global mode: the local learner starts from the announced model, :mod:`state.global_model`)."""
        self._set_learner_centres(centers)
        self.model = SegmentModel(version, centers.astype(np.float32), np.arange(self.k, dtype=np.int64), event_time)
        self._next_id = max(self._next_id, self.k)
        self._warm.clear()

    def _set_learner_centres(self, centers: np.ndarray) -> None:
        """Write centres into river's learner (a dict of Python floats per centre)."""
        for j, row in enumerate(np.asarray(centers).tolist()):
            self.learner.centers[j] = collections.defaultdict(float, enumerate(row))

    # ----- learning ----------------------------------------------------------
    def learn(self, emb: np.ndarray, keys: np.ndarray | None = None) -> None:
        """Feed a bounded, seeded sample of this batch to river (``keys``: each row's user key)."""
        if len(emb) == 0:
            return
        self._recent.add(emb, keys)  # every embedding of the batch: the consolidation step works on these
        if len(emb) > self.learn_sample:
            emb = emb[np.sort(self._rng.choice(len(emb), self.learn_sample, replace=False))]
        learn = self.learner.learn_one
        for row in emb.tolist():
            learn(dict(enumerate(row)))

    def erase(self, keys: np.ndarray) -> None:
        """Erasure: the users' rows leave the ring of recent embeddings (and with it every checkpoint).
        The centres they moved stay: an aggregate of many users, with no id."""
        self._recent.drop(keys)

    def learner_centroids(self) -> np.ndarray:
        c = self.learner.centers
        return np.array([[c[j][i] for i in range(self.dim)] for j in range(self.k)], dtype=np.float32)

    def tick(self, n_events: int, event_time: float, users_per_segment: dict[int, int],
             population: Callable[[int], np.ndarray] | None = None) -> SegmentModel | None:
        """Count events; publish a new model version every ``update_every_events``."""
        if self.model is None:
            return None
        self._since_update += n_events
        if self._since_update < self.update_every_events:
            return None
        self._since_update = 0
        return self._publish(event_time, users_per_segment, population)

    def _publish(self, event_time: float, users_per_segment: dict[int, int],
                 population: Callable[[int], np.ndarray] | None = None) -> SegmentModel:
        """Consolidate river's centres and publish them as the next model version.

        River moves one centre per point and never recovers from a poor start, so
        publication also (1) refines the centres with a few Lloyd steps over a sample
        of the users held and (2) re-seeds every starving centre (fewer than a
        quarter of its fair share of recent points) by splitting the cluster
        nearest to the most users. Centre positions are only positions: the published ids come
        from matching the result to the previous version (:func:`state.identity.identify`),
        so an id keeps covering the same users and lineage says what really changed
        (a re-seed is the end of one segment and the split of another).
        """
        assert self.model is not None
        version = self.model.version + 1
        centers = self.learner_centroids()
        ids = self.model.segment_ids.copy()  # by position; -1: re-seeded in this publication
        # Lloyd refinement, starvation and re-seeding over a sample of the users held (one row per user):
        # the labels that follow the model are the users' nearest centroids, so the centroids are fitted
        # to the users, not to the ring of recent embeddings, where heavy users count once per batch they
        # touched (on MovieLens, k = 8: HR@10 0.446 refined on the ring, 0.456 on the users, three seeds).
        # Without a population (a clusterer fed directly), the ring stands in for the users.
        held_total = sum(users_per_segment.get(int(i), 0) for i in ids)
        recent = self._recent.view()
        users = population(self._recent.size) if population is not None else recent
        if len(recent) >= 4 * self.k and len(users) >= 4 * self.k:
            centers = lloyd(users, centers, iterations=self.refine_iterations)
            for _round in range(min(self.k, self.max_reseeds)):
                labels = nearest(users, centers)
                share = np.bincount(labels, minlength=self.k) / len(users)
                low = share < self.min_share_factor / self.k
                if self.held_share_factor > 0 and held_total > 0:
                    # a segment that has had two model versions to attract users is judged by the users
                    # who *hold* it (what recommenders see) unless it gets almost no recent embeddings
                    # (half the usual floor); a younger one by the recent embeddings
                    held = np.array([users_per_segment.get(int(i), 0) for i in ids]) / held_total
                    old_enough = np.array([i >= 0 and self._born.get(int(i), 0) <= version - 3 for i in ids])
                    low = np.where(old_enough, (held < self.held_share_factor / self.k)
                                   | (share < 0.5 * self.min_share_factor / self.k), low)
                starving = np.flatnonzero(low)
                if len(starving) == 0:
                    break
                j = int(starving[0])
                # split the segment nearest to the most users: on a heavy-tailed population (MovieLens) the largest-error
                # segment is a sparse fringe, and halving it gave a new segment that starved in turn
                big = int(np.bincount(labels, minlength=self.k).argmax())
                members = users[labels == big]
                if len(members) < 2:
                    break
                halves = lloyd(members, kmeans_plus_plus(members, 2, self._rng), iterations=10)
                # no Lloyd pass over the users here: it walks the new half back into the local optimum that
                # starved the segment it replaces (k-means parks centres on a fringe of few users), and late in
                # a run that cascaded into re-seeds whose young segments had no time left to collect users
                centers[big], centers[j] = halves[0], halves[1]
                ids[j] = -1
            centers = self._try_restart(recent, centers)
        m = identify(self.model, centers, next_id=self._next_id)
        self._next_id = m.next_id
        self.lineage += [LineageEvent(e.kind, e.segments, version, event_time, e.parents, e.detail) for e in m.events]
        live = set(m.ids.tolist())
        self._born = {i: v for i, v in self._born.items() if i in live}  # ended ids are never looked up again
        self._born.update({i: version for i in live - set(self.model.segment_ids.tolist())})
        self._set_learner_centres(centers)
        self.model = SegmentModel(version, centers.astype(np.float32), m.ids, event_time)
        return self.model

    def _try_restart(self, recent: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Escape a local optimum: one seeded k-means++ restart over the recent embeddings per publication.

        Online k-means keeps two planted groups in one centre (and splits another) forever once
        it has started that way. The restart's centres replace the current ones only when their
        inertia is lower by ``restart_gain`` (relative), so a good model is never churned; ids go
        to them by the same matching as every publication.
        """
        if self.restart_gain <= 0 or len(recent) < 4 * self.k:
            return centers
        cand = lloyd(recent, kmeans_plus_plus(recent, self.k, self._rng), iterations=4 * self.refine_iterations)
        if inertia(recent, cand) >= (1.0 - self.restart_gain) * inertia(recent, centers):
            return centers
        return cand

    def drain_lineage(self) -> list[LineageEvent]:
        out, self.lineage = self.lineage, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume learning exactly where it stopped (checkpoints).

        Plain values and numpy arrays only (no pickle); :meth:`load_state_dict` is its inverse.
        """
        import json

        m = self.model
        return {
            "name": self.name,
            "model": None if m is None else {
                "version": m.version, "centroids": m.centroids, "segment_ids": m.segment_ids,
                "event_time": m.event_time},
            # river's centres are Python floats: kept as float64 so that a restore is bit-exact
            "learner": None if m is None else np.array(
                [[self.learner.centers[j][i] for i in range(self.dim)] for j in range(self.k)], dtype=np.float64),
            "next_id": self._next_id,
            "since_update": self._since_update,
            "rng": json.dumps(self._rng.bit_generator.state),
            **self._warm_state(),
            "recent": self._recent.data.copy(),
            "recent_n": self._recent.n,
            "recent_keys": self._recent.keys.copy(),
            "born_ids": np.array(sorted(self._born), dtype=np.int64),
            "born_versions": np.array([self._born[i] for i in sorted(self._born)], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (same k and dim)."""
        import json

        if state.get("name", self.name) != self.name:
            raise ValueError(f"checkpoint holds a {state['name']!r} segmenter, not {self.name!r}")
        m = state["model"]
        self.model = None if m is None else SegmentModel(
            int(m["version"]), np.asarray(m["centroids"], np.float32), np.asarray(m["segment_ids"], np.int64),
            float(m["event_time"]))
        if self.model is not None:
            if self.model.centroids.shape != (self.k, self.dim):
                raise ValueError(f"checkpoint model is {self.model.centroids.shape}, expected {(self.k, self.dim)}")
            self._set_learner_centres(np.asarray(state["learner"], np.float64))
        self._next_id = int(state["next_id"])
        self._since_update = int(state["since_update"])
        self._rng.bit_generator.state = json.loads(state["rng"])
        self._load_warm(state)
        self._recent.data[:] = state["recent"]
        self._recent.n = int(state["recent_n"])
        keys = state.get("recent_keys")  # absent in checkpoints written before rows were tagged: unknown
        self._recent.keys[:] = 0 if keys is None else np.asarray(keys, dtype=np.uint64)
        self._born = dict(zip(np.asarray(state.get("born_ids", [])).tolist(),
                              np.asarray(state.get("born_versions", [])).tolist()))
        self.lineage = []
