"""The processing core, free of Kafka: events -> user state -> encoder -> segments -> changes.

:class:`Pipeline` takes one decoded micro-batch at a time and returns what
must be published. The Kafka run loop, the recorded-log replay, training
and the benchmarks all drive this same object, so they see identical
features and identical segment decisions.

    >>> from eventlogs.synthetic import SyntheticConfig, generate
    >>> from stream.settings import Settings
    >>> p = Pipeline.from_settings(Settings(segments=2, warmup_users=20, model_update_events=100))
    >>> evs = list(generate(SyntheticConfig(users=40, groups=2, events=400)))
    >>> changes = [p.process_objects(evs[i:i + 100]).changes for i in range(0, 400, 100)]
    >>> sum(len(c) for c in changes) >= 40   # every user got a first assignment
    True
    >>> p.model.version > 1, sorted(p.users_per_segment())
    (True, [0, 1])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from encoders.serving import Encoder, load_encoder
from state.features import FeatureSpec
from state.dbstream import OnlineDBSTREAM
from state.global_dbstream import GlobalDBSTREAM
from state.global_model import SUMMARY_FACTOR, GlobalKMeans
from state.contract_tail import ContractTails
from state.kmeans import OnlineKMeans
from state.row_queue import RowQueue
from state.profiles import ItemNames, segment_profiles
from state.relabel import LABELS_SETTLED, LabelFollower
from state.segments import SegmentModel, assign_bounds, squared_distances
from state.user_store import MAX_PARTITION, UserStore, user_keys
from stream.runtime.batch_result import BatchResult, SegmentChanges
from stream.runtime.dedup import EventIdWindow
from state.events import EventBatch, EventDecoder, Rejected
from stream.runtime.pipeline_state import PipelineState
from stream.runtime.pseudonym import Pseudonymiser
from stream.runtime.tuning import tune_process
from stream.settings import Settings

__all__ = ["Pipeline", "spec_from_settings", "tune_process"]

log = logging.getLogger(__name__)

#: a batch with more users than max_users is a configuration matter, not news: said once per process
_overflow_warned = False


def default_instance_id() -> str:
    """host-pid-random: unique per process, readable in logs."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def spec_from_settings(settings: Settings, base: FeatureSpec | None = None) -> FeatureSpec:
    spec = base or FeatureSpec()
    if settings.half_life_s > 0 and settings.half_life_s != spec.half_life_s:
        spec = FeatureSpec.from_dict({**spec.to_dict(), "half_life_s": settings.half_life_s})
    return spec


class Pipeline(PipelineState):
    def __init__(self, store: UserStore, encoder: Encoder, segmenter: OnlineKMeans | OnlineDBSTREAM | GlobalKMeans,
                 decoder: EventDecoder, *, hysteresis: float = 0.05, dwell_s: float = 0.0,
                 profile_every_events: int = 0, seed: int = 0) -> None:
        if store.spec != encoder.spec:
            raise ValueError("the user store and the encoder disagree on the feature configuration")
        self.store = store
        self.encoder = encoder
        self.segmenter = segmenter
        self.decoder = decoder
        self.hysteresis = hysteresis
        self.dwell_s = dwell_s
        self.profile_every_events = profile_every_events
        self._since_profile = 0
        self._profile_rng = np.random.default_rng([seed, 13])
        self._sample_rng = np.random.default_rng([seed, 17])  # consolidation sample of users
        # k-means centres refined and starvation judged on a sample of the users held (OnlineKMeans._publish)
        self.consolidate_on_users = True
        self._changed_at = np.zeros(0, dtype=np.float64)  # event time of each row's last segment change
        self._segment_users = np.zeros(0, dtype=np.int64)  # users per segment id
        self._stale = RowQueue()  # rows to (re-)assign: label not certified by the model, or restored without one
        self.reassign_per_batch = Settings.reassign_per_batch  # rows re-assigned per batch, besides its own
        self._labels = LabelFollower(store.capacity)  # certifies held labels across model versions without re-embedding
        self.item_names = ItemNames()
        self.events_seen = 0
        self.pseudonymiser: Pseudonymiser | None = None  # keyed hash of user ids before anything is stored
        self.dedup: EventIdWindow | None = None  # drops repeated event_ids within a bounded window
        # called with the user keys of each batch's erased users, before anything of the batch is
        # published or checkpointed: copies kept outside the pipeline (the drift monitor's embeddings)
        self.erasure_hooks: list[Callable[[np.ndarray], None]] = []
        # what the output contract keeps of evicted users (seq, segment, last change id)
        self.tails = ContractTails(store.capacity)
        store.on_evict = self._on_evict

    @classmethod
    def from_settings(cls, settings: Settings, *, now: Callable[[], float] = time.time) -> Pipeline:
        """Build everything the settings name: encoder (or raw), state, segmenter, decoder."""
        tune_process(settings)
        if settings.encoder:
            encoder = load_encoder(settings.encoder, device=settings.encoder_device, max_batch=settings.encoder_batch)
            if settings.half_life_s > 0 and settings.half_life_s != encoder.spec.half_life_s:
                from encoders.artifact import ArtifactError

                raise ArtifactError(
                    f"{settings.encoder}: trained with half_life_s={encoder.spec.half_life_s}, "
                    f"but SEGSTREAM_HALF_LIFE_S={settings.half_life_s}; retrain or unset it")
        else:
            encoder = Encoder.raw(spec_from_settings(settings))
        spec = encoder.spec
        store = UserStore(spec, capacity=settings.max_users)
        segmenter: OnlineKMeans | OnlineDBSTREAM | GlobalKMeans
        if settings.clusterer == "dbstream":
            segmenter = OnlineDBSTREAM(
                encoder.dim, radius=settings.dbstream_radius, fading_factor=settings.dbstream_fading,
                intersection_factor=settings.dbstream_intersection, warmup_users=settings.warmup_users,
                learn_sample=settings.learn_sample,
                recluster_events=settings.model_update_events, seed=settings.seed, match_factor=settings.match_factor,
                min_share=settings.dbstream_min_share)
        else:
            # global model: the local learner summarises this instance's users with more centres than the
            # model has segments, so that no summary centre straddles two groups (state.global_model); river
            # costs a distance per centre per sampled row, so it samples fewer rows (same cost per batch)
            local_k, sample = settings.segments, settings.learn_sample
            if settings.global_model:
                local_k = min(SUMMARY_FACTOR * settings.segments, settings.warmup_users)
                sample = max(1, sample * settings.segments // local_k)
            segmenter = OnlineKMeans(
                local_k, encoder.dim, learning_rate=settings.learning_rate,
                warmup_users=settings.warmup_users, learn_sample=sample,
                update_every_events=settings.model_update_events, seed=settings.seed)
        if settings.global_model:
            shared = GlobalDBSTREAM if settings.clusterer == "dbstream" else GlobalKMeans
            segmenter = shared(segmenter, settings.instance_id or default_instance_id(), k=settings.segments,  # type: ignore[arg-type]
                               first_wait_s=settings.model_first_wait_ms / 1000.0,
                               silent_after_s=settings.model_silent_after_s,
                               merge_wait_s=settings.model_merge_wait_ms / 1000.0)
        decoder = EventDecoder(spec, max_event_bytes=settings.max_event_bytes, min_ts=settings.min_event_ts,
                               max_clock_skew_s=settings.max_clock_skew_s, now=now)
        pipeline = cls(store, encoder, segmenter, decoder, hysteresis=settings.hysteresis, dwell_s=settings.dwell_s,
                       profile_every_events=settings.profile_every_events, seed=settings.seed)
        pipeline.reassign_per_batch = settings.reassign_per_batch
        if settings.pseudonymise_key:
            pipeline.pseudonymiser = Pseudonymiser(settings.pseudonymise_key)
        if settings.dedup_window > 0:
            pipeline.dedup = EventIdWindow(settings.dedup_window)
        return pipeline

    # ----- views -------------------------------------------------------------
    @property
    def model(self) -> SegmentModel | None:
        return self.segmenter.model

    def users_per_segment(self) -> dict[int, int]:
        nz = np.flatnonzero(self._segment_users)
        return {int(s): int(self._segment_users[s]) for s in nz}

    def segment_of(self, user_id: str) -> int | None:
        row = self.store.row_of(user_id)
        if row is None or self.store.segment[row] < 0:
            return None
        return int(self.store.segment[row])

    # ----- processing ----------------------------------------------------------
    def process_records(self, raws: Sequence[bytes | None], partitions: np.ndarray | None = None) -> BatchResult:
        """Decode and process record values; ``partitions[i]``: source partition of ``raws[i]``."""
        return self.process_decoded(*self.decoder.decode_records(raws), partitions)

    def process_decoded(self, batch: EventBatch, rejected: list[Rejected],
                        partitions: np.ndarray | None = None) -> BatchResult:
        """Process a batch decoded elsewhere (:mod:`stream.runtime.decode_worker`): what ``process_records`` does next."""
        result = self.process(batch, partitions)
        result.rejected = rejected
        return result

    def process_objects(self, objs: Sequence[Any]) -> BatchResult:
        return self.process_decoded(*self.decoder.decode_objects(objs))

    def process(self, batch: EventBatch, partitions: np.ndarray | None = None) -> BatchResult:
        if partitions is not None and len(partitions) and int(partitions.max()) > MAX_PARTITION:
            raise ValueError(f"input partition {int(partitions.max())}: the user store names partitions up to "
                             f"{MAX_PARTITION} (int16)")
        store, seg = self.store, self.segmenter
        erased: list[str] = []
        erased_sources: list[int] = []
        self.item_names.update(batch.item_names)
        if self.pseudonymiser is not None:
            batch = self.pseudonymiser.apply(batch)
        if batch.deletes:  # before de-duplication: the window then keeps only ids of the users' new life
            delete_at = {uid: src for src, uid in batch.deletes}
            batch, erased = self._erase(batch)
            erased_sources = [delete_at[u] for u in erased]
        duplicates = 0
        if self.dedup is not None and batch.event_ids:
            batch, duplicates = self.dedup.filter(batch)
        applied = store.apply(batch)
        if partitions is not None and len(applied.rows):
            store.partition[applied.rows] = partitions[batch.source_index[applied.last_event]]
        if applied.new_users and self.tails.evicted:
            self._carry_tails(applied.rows)
        self._count(applied.evicted_segments, -1)
        for uid in applied.evicted_user_ids:
            seg.forget(uid)
        if applied.overflow:
            _warn_overflow(applied.overflow, store.capacity)
        rows = applied.rows
        n = len(batch)
        self.events_seen += n
        result = BatchResult(events=n, changes=SegmentChanges.empty(self._version()), erased=erased,
                             erased_sources=erased_sources, touched=applied.rows,
                             users_updated=len(rows), new_users=applied.new_users,
                             evicted=len(applied.evicted_rows) + applied.overflow_new,  # new users turned away count too
                             duplicates=duplicates)
        if n == 0:
            return result
        result.max_event_time = float(batch.ts.max())
        t = time.perf_counter()
        emb = self._embed(rows)
        result.encode_seconds = time.perf_counter() - t
        source = batch.source_index[applied.last_event]
        event_time = batch.ts[applied.last_event]

        if seg.warming:
            seg.add_warmup(store.user_ids(rows), emb, event_time=result.max_event_time, events=n)
            if not seg.ready():
                return result
            wrows, wemb = self._seed_waiting(result.max_event_time)
            in_batch = dict(zip(rows.tolist(), range(len(rows))))
            pos = np.array([in_batch.get(r, -1) for r in wrows.tolist()], dtype=np.int64)
            source = np.where(pos >= 0, source[np.maximum(pos, 0)], -1)
            event_time = np.where(pos >= 0, event_time[np.maximum(pos, 0)], store.last_ts[wrows])
            rows, emb = wrows, wemb
            result.new_model = seg.model

        # learn and publish first: every change of this batch is decided by the newest model version
        arrived_to, own_rows, own_emb = seg.model, rows, emb
        seg.learn(emb, store.key[rows])
        # the users who hold each segment tell the clusterer which segments starve, but only once labels have
        # caught up with the model: before that a young segment has had no chance to collect its users
        held = self.users_per_segment() if self.label_agreement() >= LABELS_SETTLED else {}
        new_model = seg.tick(n, result.max_event_time, held, self._population if self.consolidate_on_users else None)
        if new_model is not None:
            result.new_model = new_model
        self._take_lineage(result)
        learn_emb, learn_keys = emb, store.key[rows]
        stale = self._take_stale(rows)
        if len(stale):
            rows = np.concatenate([rows, stale])
            emb = np.concatenate([emb, self._embed(stale)])
            source = np.concatenate([source, np.full(len(stale), -1, dtype=np.int64)])
            # the model caused these changes, not an event of theirs: they carry the event time at which they
            # are made (this batch's newest), not the user's last activity (which may be long past)
            event_time = np.concatenate([event_time, np.full(len(stale), result.max_event_time)])
        reassigned = np.zeros(len(rows), dtype=bool)
        reassigned[len(rows) - len(stale):] = True  # queued by a new model version (or a restore)
        held_before = store.segment[rows].copy()
        result.changes = self._assign(rows, emb, source, event_time, reassigned)
        result.reassigned = int((store.segment[stale] != held_before[len(own_rows):]).sum())
        # drift signals: the batch's own users, against the model version the batch arrived to
        result.distances = store.distance[own_rows]
        if new_model is not None and arrived_to is not None and arrived_to is not new_model:
            result.distances = assign_bounds(arrived_to, own_emb, held_before[: len(own_rows)], self.hysteresis)[1]
        result.embeddings, result.embedding_keys = learn_emb, learn_keys
        if new_model is not None:
            result.label_agreement = self.label_agreement()
        if self.profile_every_events > 0:
            self._since_profile += n
            if self._since_profile >= self.profile_every_events:
                self._since_profile = 0
                result.profiles = segment_profiles(store, seg.model, self._profile_rng,
                                                   item_names=self.item_names, event_time=result.max_event_time)
        return result

    def _take_lineage(self, result: BatchResult) -> None:
        """The segmenter's lineage events into ``result``; users the current model version may have
        re-labelled are queued for re-assignment (:meth:`state.relabel.LabelFollower.follow` says which,
        in which order; a bounded number per batch)."""
        result.lineage = self.segmenter.drain_lineage()
        self._stale = self._labels.follow(self.segmenter.model, self.store.segment, self.hysteresis, self._stale,
                                          ordered=8 * self.reassign_per_batch)

    def assign_waiting(self) -> BatchResult | None:
        """Assign the users held back until the model arrived, without a batch of events (global mode:
        the model can arrive after an instance's partitions ran dry); or, for a global version applied
        between batches, hand on its lineage and re-assign a batch's share of the users it may have
        re-labelled (those of ended segments first), so that an instance whose partitions ran dry publishes
        no segment the model has ended. None when there is nothing to do."""
        seg = self.segmenter
        if not (seg.warming and seg.ready()):
            if seg.model is None or (not seg.lineage and seg.model is self._labels.model and not len(self._stale)):
                return None
            result = BatchResult(events=0, changes=SegmentChanges.empty(self._version()))
            self._take_lineage(result)
            stale = self._take_stale(np.zeros(0, dtype=np.int64))
            if len(stale):  # caused by the version, not by an event: they carry the version's event time
                result.changes = self._assign(stale, self._embed(stale), np.full(len(stale), -1, dtype=np.int64),
                                              np.full(len(stale), float(seg.model.event_time)),
                                              np.ones(len(stale), dtype=bool))
                result.reassigned = int(len(result.changes))
            return result
        rows, emb = self._seed_waiting(float("nan"))
        result = BatchResult(events=0, changes=SegmentChanges.empty(self._version()), new_model=seg.model)
        if len(rows):
            result.changes = self._assign(rows, emb, np.full(len(rows), -1, dtype=np.int64),
                                          self.store.last_ts[rows].astype(np.float64), np.zeros(len(rows), bool))
            seg.learn(emb, self.store.key[rows])
        self._take_lineage(result)
        return result

    def _seed_waiting(self, event_time: float) -> tuple[np.ndarray, np.ndarray]:
        """Seed (or adopt) the model; rows and embeddings of the users that waited for it and are still held."""
        users, emb = self.segmenter.seed_model(event_time)
        rows = self.store.rows_or_missing(users)
        keep = rows >= 0
        return rows[keep], emb[keep]

    def _embed(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of the users at ``rows`` (recent items gathered only for encoders that read them)."""
        return self.encoder.encode(self.store.features(rows, items=self.encoder.uses_items))

    def _population(self, n: int) -> np.ndarray:
        """Embeddings of at most ``n`` assigned users (the consolidation population): those whose user key
        falls below a threshold, so that the sample stays the same users from one version to the next (only
        arrivals and departures change it). A fresh random sample per version made Lloyd's fixed point
        jitter with it: on the 1M-user replay centres moved 0.3-1.9 per version against users' margins
        of about 2, and few labels stayed certified by the bounds for long."""
        rows = self.store.live_rows()
        rows = rows[self.store.segment[rows] >= 0]
        if len(rows) > n:  # keys are uniform over uint64: a threshold keeps about n of them, with no sort
            keys = self.store.key[rows]
            rows = rows[keys < np.uint64(min(float(n) / len(rows), 1.0) * 2.0 ** 64 * 0.999)][:n]
        return self._embed(rows)

    def label_agreement(self) -> float:
        """Share of the users holding a segment certified to hold what the current model gives them, with
        hysteresis (:meth:`state.relabel.LabelFollower.agreement`); the others are queued."""
        return self._labels.agreement(self._stale, self.store.segment, int(self._segment_users.sum()))

    def _take_stale(self, exclude: np.ndarray) -> np.ndarray:
        """Rows queued for (re-)assignment, a bounded number per batch. Rows freed since are skipped."""
        if len(self._stale) == 0:
            return np.zeros(0, dtype=np.int64)
        take = self._stale.take(self.reassign_per_batch)  # freed rows dropped from what is taken, not from
        take = take[self.store.holds_user(take)]           # the whole queue (hundreds of thousands at 1M users)
        return take[~np.isin(take, exclude)]

    def requeue_unassigned(self) -> int:
        """After a restore: users held without a segment (they were waiting for the first model on the
        instance that checkpointed them) get one in a coming batch, even if they send no new event."""
        rows = self.store.live_rows()
        rows = rows[self.store.segment[rows] < 0]
        if len(rows) == 0:
            return 0
        if self.segmenter.warming:
            waiting = self.segmenter.waiting_users()
            ids = self.store.user_ids(rows)
            new = np.array([u not in waiting for u in ids], dtype=bool)
            if not new.any():
                return 0
            rows = rows[new]
            self.segmenter.add_warmup([u for u, k in zip(ids, new) if k], self._embed(rows))
        else:
            self._stale.add(rows)
        return len(rows)

    def _version(self) -> int:
        m = self.segmenter.model
        return 0 if m is None else m.version

    def _erase(self, batch: EventBatch) -> tuple[EventBatch, list[str]]:
        """Forget deleted users everywhere the pipeline keeps them: state row, dwell clock, warm-up
        buffer, the segmenter's recent-embedding ring, the event-id window, and (through
        ``erasure_hooks``) copies kept outside it. Their events *before* the delete in this batch are
        dropped too."""
        erased = []
        deleted_at: dict[str, int] = {}
        for src, uid in batch.deletes:
            deleted_at[uid] = max(src, deleted_at.get(uid, -1))
            row = self.store.row_of(uid)
            prev = self.store.delete(uid)
            if row is not None and row < len(self._changed_at):
                self._changed_at[row] = -np.inf
            self.segmenter.forget(uid)
            self.tails.forget(uid)
            if prev is not None and prev >= 0:
                self._count(np.array([prev]), -1)
            if uid not in erased:  # a tombstone even for a user not (or no longer) held: erasure is idempotent
                erased.append(uid)
        keys = user_keys(erased)
        self.segmenter.erase(keys)
        if self.dedup is not None:
            self.dedup.erase(set(erased))
        for hook in self.erasure_hooks:
            hook(keys)
        src = batch.source_index.tolist()
        keep = np.array([src[i] > deleted_at.get(u, -1) for i, u in enumerate(batch.user_ids)], dtype=bool)
        return (batch if keep.all() else batch.select(keep)), erased

    def _count(self, segments: np.ndarray, delta: int) -> None:
        segments = segments[segments >= 0]
        if len(segments) == 0:
            return
        top = int(segments.max()) + 1
        if top > len(self._segment_users):
            grown = np.zeros(max(top, 2 * len(self._segment_users)), dtype=np.int64)
            grown[: len(self._segment_users)] = self._segment_users
            self._segment_users = grown
        np.add.at(self._segment_users, segments, delta)

    def _assign(self, rows: np.ndarray, emb: np.ndarray, source: np.ndarray, event_time: np.ndarray,
                reassigned: np.ndarray) -> SegmentChanges:
        store = self.store
        model = self.segmenter.model
        assert model is not None
        current = store.segment[rows].astype(np.int64)
        new, dist, other = assign_bounds(model, emb, current, self.hysteresis)
        if self.dwell_s > 0:
            if len(self._changed_at) < len(store.segment):
                grown = np.full(len(store.segment), -np.inf)
                grown[: len(self._changed_at)] = self._changed_at
                self._changed_at = grown
            held = ((current >= 0) & (model.index_of(current) >= 0) & ~reassigned  # re-assignments are not held
                    & (event_time - self._changed_at[rows] < self.dwell_s))
            if held.any():
                keep = held & (new != current)
                cur_ix = model.index_of(current[keep])
                dist[keep] = np.sqrt(squared_distances(emb[keep], model.centroids)[np.arange(keep.sum()), cur_ix])
                new = np.where(held, current, new)
                other[held] = -np.inf  # not the margin's choice: checked again at the next version
        store.distance[rows] = dist
        self._labels.bounds.set_exact(rows, dist, other, model)
        changed = np.flatnonzero(new != current)
        if len(changed) == 0:
            return SegmentChanges.empty(model.version)
        crow = rows[changed]
        prev = current[changed]
        self._count(prev, -1)
        self._count(new[changed], +1)
        store.segment[crow] = new[changed]
        if self.dwell_s > 0:
            self._changed_at[crow] = event_time[changed]
        store.seq[crow] += 1
        return SegmentChanges(
            user_ids=store.user_ids(crow), segments=new[changed], previous=prev, distances=dist[changed],
            seq=store.seq[crow].copy(), event_time=event_time[changed].astype(np.float64),
            source_index=source[changed].astype(np.int64), model_version=model.version, rows=crow.astype(np.int64))

    # ----- eviction keeps the contract ----------------------------------------------
    def _on_evict(self, rows: np.ndarray, ids: list[str]) -> None:
        """The store is about to free ``rows``: keep the contract tail of those that had a change."""
        store = self.store
        seq = store.seq[rows]
        had = seq > 0
        if had.any():
            r = rows[had]
            self.tails.capture([u for u, k in zip(ids, had.tolist()) if k], seq[had], store.segment[r], r,
                               store.partition[r])
        self.tails.clear_rows(rows[~had])

    def _carry_tails(self, rows: np.ndarray) -> None:
        """Users back after an eviction continue their ``seq``, segment and last change id."""
        store = self.store
        fresh = rows[store.seq[rows] == 0]
        back = self.tails.take(store.user_ids(fresh)) if len(fresh) else {}
        if not back:
            return
        brows = store.rows_of(list(back))
        seq, seg, cid, _ = zip(*back.values())
        store.seq[brows] = seq
        store.segment[brows] = seg
        self._count(np.asarray(seg, dtype=np.int64), +1)
        self.tails.set_change_ids(brows, [c.hex() if c else "" for c in cid])


def _warn_overflow(overflow: int, capacity: int) -> None:
    """Warn, once per process, that a batch brought more users than ``max_users`` (the store evicted
    the least recently active of them within the batch; every batch that does so counts its evictions)."""
    global _overflow_warned
    if _overflow_warned:
        return
    _overflow_warned = True
    log.warning("a micro-batch brought %d users more than SEGSTREAM_MAX_USERS=%d: the least recently active "
                "of them were evicted within the batch (raise max_users or lower SEGSTREAM_BATCH_MAX_EVENTS; "
                "said once per process, segstream_users_evicted_total counts every eviction)", overflow, capacity)
