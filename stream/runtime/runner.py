"""The Kafka run loop: poll a micro-batch, process it, checkpoint, publish.

Delivery is at-least-once, and a checkpoint is one named sequence,
:meth:`StreamRunner.checkpoint`: persist state, model and the interval's
segment changes (the outbox) with the offsets they reflect, confirmed up to
the partition's marker (the commit point), then publish the outbox, and (at most every
``commit_interval_ms``, after a confirm) commit the markers' offsets explicitly. A stop request
(SIGTERM/SIGINT) lets the current batch finish and checkpoint before the consumer leaves the group.
How batches are cut is in :mod:`stream.runtime.batching`, how partitions are restored in
:mod:`stream.runtime.restore`.

Rebalance callbacks run on kafka-python's IO thread, so the listener only
queues what happened; the loop applies it right after the poll that ran the
callbacks, before any record is processed: revoked partitions' state is
dropped (their last commit stands), lost partitions are dropped without
committing, assigned partitions are restored from their snapshot and the
consumer seeks to the snapshot's offset.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np
from stream.kafka import CommitFailedError, Consumer, KafkaError, TopicPartition, commit_offsets

from stream.runtime.batching import MicroBatches
from stream.runtime.changelog import Changelog
from stream.runtime.changelog_cache import cache_extra
from stream.runtime.checkpoints import CheckpointStore
from stream.contracts.user_segments import change_ids
from stream.runtime.decode_worker import DecodeAhead
from state.events import EventBatch, Rejected
from stream.kafka.clients import Publisher
from stream.observability.metrics import Metrics
from stream.runtime.outputs import OutputWriter
from stream.runtime.summary import RunSummary
from stream.runtime.batch_result import BatchResult
from stream.runtime.pipeline import Pipeline
from stream.runtime.restore import PartitionRestore
from stream.kafka.rebalance import RebalanceTracker
from stream.kafka.records import Records
from stream.settings import Settings

__all__ = ["StreamRunner"]

log = logging.getLogger(__name__)


class StreamRunner(MicroBatches, PartitionRestore):
    def __init__(self, settings: Settings, pipeline: Pipeline, consumer: Consumer, publisher: Publisher,
                 metrics: Metrics, *, clock: Callable[[], float] = time.time,
                 on_batch: Callable[[BatchResult, RunSummary], None] | None = None,
                 checkpoints: CheckpointStore | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.consumer = consumer
        self.publisher = publisher
        self.outputs = OutputWriter(publisher, settings)
        self.metrics = metrics
        self.clock = clock
        self.on_batch = on_batch
        self.checkpoints = checkpoints
        if pipeline is not None:  # erased from the drift monitor before the batch is checkpointed
            pipeline.erasure_hooks.append(metrics.drift.forget)
        self.rebalance = RebalanceTracker(self._log_context)
        self.summary = RunSummary()
        self._positions: dict[TopicPartition, int] = {}  # last committed offset per owned partition
        self._marked: dict[TopicPartition, int] = {}  # with the changelog: the offset of each partition's last marker
        self._last_commit = -math.inf  # the first checkpoint commits at once, later ones at most every commit_interval_ms
        self._state_offsets: dict[TopicPartition, int] = {}  # next offset the in-memory state reflects
        self._buffer: dict[TopicPartition, Records] = {}  # aligned batching: records not yet processed
        self._deadline: dict[TopicPartition, float] = {}
        self._last_checkpoint = time.monotonic()
        self._checkpoint_seconds = 0.0  # how long the last checkpoint took: the share rule's measure
        self._reset: set[TopicPartition] = set()
        # back-pressure: the batch size shrinks while batches take too large a share of max_poll_interval_ms
        self._batch_cap = settings.batch_max_events
        self._restoring: dict[TopicPartition, int] = {}  # partition -> committed offset its state must reach
        self.model_sync = None  # stream.runtime.model_sync.ModelSync when the model is shared by the group
        self.decode_ahead: DecodeAhead | None = None  # decodes the next batch in a child while this one is processed
        self._ahead: Records | None = None  # the next batch, fetched while this one is processed (decode process)
        self.last_turn = time.monotonic()  # liveness (/healthz): when the loop last turned
        self._applying = False  # readiness (/readyz): an assignment change is being applied (restore)
        self._changelog: Changelog | None = None

    @property
    def changelog(self) -> Changelog | None:
        """The state changelog in Kafka (on unless SEGSTREAM_CHANGELOG=false). With it, ``user-segments``
        records wait in its outbox until their checkpoint's marker is confirmed (:meth:`checkpoint`)."""
        return self._changelog

    @changelog.setter
    def changelog(self, changelog: Changelog | None) -> None:
        self._changelog = changelog
        self.outputs.outbox = changelog.hold if changelog is not None else None

    def _log_context(self, tp: TopicPartition) -> dict:
        """Structured log fields of a partition: topic, partition, last committed offset, group generation."""
        try:
            generation = self.consumer.group_metadata().generation_id
        except Exception:  # not in a group yet
            generation = -1
        return {"topic": tp.topic, "partition": tp.partition, "offset": self._positions.get(tp), "generation": generation}

    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.input_topic], listener=self.rebalance)

    # ------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, *, max_events: int | None = None,
            idle_exit_s: float | None = None) -> RunSummary:
        stop = stop or threading.Event()
        summary = self.summary
        started = time.perf_counter()
        last_record = time.monotonic()
        while True:
            self.last_turn = time.monotonic()
            if stop.is_set():
                summary.stopped_by = "signal"
                break
            if max_events is not None and summary.events >= max_events:
                summary.stopped_by = "max-events"
                break
            if self.model_sync is not None:  # between batches: apply announced models, send summaries/proposals
                owned = self.rebalance.owned()
                self.model_sync.pump(leader=TopicPartition(self.settings.input_topic, 0) in owned,
                                     partitions=[tp.partition for tp in owned if tp.topic == self.settings.input_topic])
                self._assign_waiting()
            if self._ahead is not None:
                records, self._ahead = self._ahead, None
            else:
                records = self._collect_aligned(stop) if self.settings.aligned_batches else self._collect(stop)
            if self._reset or not self.rebalance.owned():  # idle time counts while partitions are owned
                last_record = max(last_record, time.monotonic())
            if not len(records):
                self._maybe_checkpoint(force=False)
                if idle_exit_s is not None and time.monotonic() - last_record >= idle_exit_s:
                    summary.stopped_by = "idle"
                    break
                continue
            last_record = time.monotonic()
            decoded = None
            if self.decode_ahead is not None and self.decode_ahead.active:
                records, decoded = self._prefetch(records)
                if not len(records):
                    continue
            self._process(records, decoded)
        self._maybe_checkpoint(force=True)  # a prefetched batch is left unprocessed and uncommitted: read again
        summary.seconds += time.perf_counter() - started
        return summary

    # ----- rebalances ----------------------------------------------------
    def _apply_rebalance(self) -> set[TopicPartition]:
        """Act on queued rebalance events; returns partitions whose fetched records must be dropped."""
        events = self.rebalance.drain()
        if not events:
            return set()
        self._applying = True  # /readyz: not ready until the restore below is done (reset on the way out)
        gone: dict[TopicPartition, str] = {}
        assigned: set[TopicPartition] = set()
        for kind, tps in events:
            if kind == "assigned":
                assigned |= tps
            else:
                assigned -= tps
                for tp in tps:
                    gone[tp] = "lost" if "lost" in (kind, gone.get(tp)) else kind
        # revoked and handed straight back (eager rebalancing): keep the state if it is all committed
        keep = {tp for tp in assigned if gone.get(tp, "revoked") == "revoked" and self._in_sync(tp)}
        for tp in keep:
            gone.pop(tp, None)
        meta = self.consumer.group_metadata()
        for tp, kind in sorted(gone.items(), key=lambda x: x[0].partition):
            self._drop(tp, kind)
        for tp in keep:  # rewind to what the state reflects: records fetched or buffered past it come again
            self._buffer.pop(tp, None)
            self._deadline.pop(tp, None)
            self.consumer.seek(tp, self._state_offsets[tp])
        restore = assigned - keep
        if restore:
            self._restore(restore)
        log.info("rebalance applied", extra={
            "generation": meta.generation_id, "member": meta.member_id,
            "assigned": sorted(tp.partition for tp in self.rebalance.owned()),
            "dropped": sorted(tp.partition for tp in gone), "restored": sorted(tp.partition for tp in restore),
            "kept": sorted(tp.partition for tp in keep)})
        self.metrics.set_assigned([(tp.topic, tp.partition) for tp in self.rebalance.owned()])
        self._applying = False
        return restore | set(gone) | keep

    def readiness(self) -> tuple[bool, str]:
        """/readyz: in the group (an assignment came, even an empty one), no assignment change waiting
        or being applied, and every owned partition restored up to its committed offset. Read on the
        HTTP endpoint's thread: it only reads flags and sizes."""
        if self.rebalance.generations == 0:
            return False, "not in the consumer group yet"
        if self._applying or self.rebalance.pending():
            return False, "applying a rebalance (restoring partitions)"
        if self._restoring:
            return False, f"replaying {len(self._restoring)} partition(s) up to their committed offsets"
        return True, "ok"

    def _in_sync(self, tp: TopicPartition) -> bool:
        """Whether the in-memory state of ``tp`` is exactly what was last committed (nothing to redo)."""
        if self.changelog is not None and self.changelog.holds(tp.partition):
            return False  # outputs not yet official: drop and restore from the last marker
        return tp in self._state_offsets and self._state_offsets[tp] == self._covered().get(tp)

    def _covered(self) -> dict[TopicPartition, int]:
        """Per partition, the offset its last checkpoint covers: its marker's with the changelog (the
        offsets are committed later, :meth:`_commit_marked`), the committed offset without."""
        return self._marked if self.changelog is not None else self._positions

    def _position_processed(self, tp: TopicPartition) -> int:
        """The consumer's position less the records fetched ahead and not processed yet."""
        position = self.consumer.position(tp)
        ahead = self._ahead
        if ahead is not None:
            mine = ahead.offsets[ahead.partitions == tp.partition]
            if len(mine):
                position = min(position, int(mine[0]))
        return position

    def _check_restored(self) -> None:
        """A restore ends when the consumer's position reaches the committed offset (not on a record
        offset: transaction markers and compaction leave gaps)."""
        for tp, target in list(self._restoring.items()):
            if tp not in self.rebalance.owned():
                del self._restoring[tp]
            elif self._position_processed(tp) >= target:
                del self._restoring[tp]
                log.info("partition %s caught up with its committed offset %d", tp, target,
                         extra={"partition": tp.partition, "offset": target})

    def _assign_waiting(self) -> None:
        """Global model: users held back until the first model was announced get their segment
        as soon as it is, even when their partitions have no more records. Each change id is derived
        from the offset the user's partition state reflects, so a replay after a crash repeats it."""
        result = self.pipeline.assign_waiting()
        if result is None:
            return
        store = self.pipeline.store
        parts = store.partition[self._change_rows(result)].tolist()
        offs = [self._state_offsets.get(TopicPartition(self.settings.input_topic, p), 0) - 1 for p in parts]
        ids = change_ids(result.changes, (), (), reflected=(parts, offs))
        self.outputs.write(result, Records.empty(self.settings.input_topic), self.clock(), ids,
                           self._output_partitions(result, Records.empty(self.settings.input_topic)))
        self._note_changes(result, ids)
        self.publisher.confirm()
        self.summary.changes += len(result.changes)
        if result.new_model is not None:
            self.metrics.model_version.set(result.new_model.version)
        self.metrics.observe_lineage(result.lineage)
        if len(result.changes):
            log.info("assigned %d users held back until model version %d", len(result.changes),
                     self.pipeline.model.version)

    # ----- processing ----------------------------------------------------
    def _process(self, records: Records, decoded: tuple[EventBatch, list[Rejected]] | None = None) -> None:
        t0 = time.perf_counter()
        partitions = records.partitions.astype(np.int32)
        result = (self.pipeline.process_records(records.values, partitions) if decoded is None
                  else self.pipeline.process_decoded(*decoded, partitions))
        ids = None
        if self.changelog is not None and len(result.changes):
            ids = change_ids(result.changes, records.partitions, records.offsets)
        self.outputs.write(result, records, self.clock(), ids,
                           self._output_partitions(result, records) if self.changelog is not None else None)
        if self.changelog is not None:
            self._note_changes(result, ids)
            if result.erased:
                self.changelog.erased(result.erased, records.partitions[result.erased_sources].tolist())
        for tp, nxt in records.next_offsets().items():
            if nxt > self._state_offsets.get(tp, -1):
                self._state_offsets[tp] = nxt
        if self._restoring:
            self._check_restored()
        full = self._max_batch  # records are waiting: this batch, or the one already fetched, is full
        busy = len(records) >= full or (self._ahead is not None and len(self._ahead) >= full)
        if not self._maybe_checkpoint(force=False, busy=busy):
            self.publisher.confirm()
        confirmed_at = time.time()
        ts = records.timestamps.astype(np.float64)
        self.metrics.event_to_publish.observe_many(confirmed_at - ts / 1000.0)
        seconds = time.perf_counter() - t0
        self._observe(result, records, seconds)
        self._pace(seconds, len(records))

    def _output_partitions(self, result: BatchResult, records: Records) -> np.ndarray:
        """The input partition of each ``user-segments`` record of ``result`` (tombstones, then changes):
        the outbox it waits in. An erased user's is its delete's; a changed user's is the one it is stored
        under (the changelog partition its row is written to)."""
        store = self.pipeline.store
        tomb = records.partitions[np.asarray(result.erased_sources, dtype=np.int64)] if result.erased else []
        rows = self._change_rows(result)
        return np.concatenate([np.asarray(tomb, dtype=np.int64), store.partition[rows].astype(np.int64)])

    def _change_rows(self, result: BatchResult) -> np.ndarray:
        """The store rows of the batch's changed users (as the pipeline knew them, else looked up)."""
        rows = result.changes.rows
        return rows if rows is not None else self.pipeline.store.rows_of(result.changes.user_ids)

    def _note_changes(self, result: BatchResult, ids: list[str] | None) -> None:
        """Rows the batch changed, and each changed user's last change id, for the next changelog write."""
        if self.changelog is None:
            return
        store = self.pipeline.store
        self.changelog.mark(result.touched)
        if ids:
            rows = self._change_rows(result)
            self.pipeline.tails.set_change_ids(rows, ids)
            self.changelog.mark(rows)

    def _pace(self, seconds: float, n: int) -> None:
        """Keep one batch (process, publish, confirm, checkpoint) under a quarter of the poll budget.

        Aligned batching keeps its fixed block size (determinism first) and only warns.
        """
        budget = self.settings.max_poll_interval_ms / 4000.0
        if seconds > budget:
            if not self.settings.aligned_batches:
                self._batch_cap = max(1, n // 2)
            log.warning("a batch of %d records took %.1fs (> %.1fs, a quarter of max_poll_interval_ms): "
                        "batch size now at most %d", n, seconds, budget, self._batch_cap)
        elif seconds < budget / 8 and self._batch_cap < self.settings.batch_max_events:
            self._batch_cap = min(self.settings.batch_max_events, 2 * self._batch_cap)

    def _checkpoint_gap_s(self, busy: bool) -> float:
        """How long after the last checkpoint ended the next one may start: ``checkpoint_interval_ms``, and
        while the loop is ``busy`` (its last micro-batch was full: records are waiting) also long enough that
        checkpoints take at most ``checkpoint_share`` of the loop's time, judged by the last one, up to
        ``checkpoint_max_gap_ms``.

        Why: a checkpoint costs a fixed part (the model's records, the markers, two confirm round trips)
        plus a part per changed user. A loop that keeps up checkpoints after every micro-batch, so its
        outputs (which wait for their checkpoint) wait for nothing more; a loop with a backlog spaces its
        checkpoints, pays the fixed part once for many batches and writes a user that changed in several
        of them once, which is what lets it catch up.
        """
        s = self.settings
        gap = s.checkpoint_interval_ms / 1000.0
        if busy:
            share = s.checkpoint_share  # in (0, 1]: Settings refuses anything else
            gap = max(gap, min(self._checkpoint_seconds * (1.0 - share) / share, s.checkpoint_max_gap_ms / 1000.0))
        return gap

    def _checkpoint_offsets(self) -> dict[TopicPartition, int]:
        """The offsets a checkpoint now would persist; empty when it would persist nothing new."""
        owned = self.rebalance.owned()
        offsets = {tp: off for tp, off in self._state_offsets.items() if tp in owned and off >= 0}
        held = self.changelog is not None and self.changelog.holds()
        covered = self._covered()
        if not offsets or (not held and all(covered.get(tp) == off for tp, off in offsets.items())):
            return {}
        return offsets

    def _checkpoint_due_in(self, busy: bool = False) -> float:
        """Seconds until the next checkpoint may start (<= 0: now)."""
        return self._last_checkpoint + self._checkpoint_gap_s(busy) - time.monotonic()

    def _maybe_checkpoint(self, *, force: bool, busy: bool = False) -> bool:
        if not (force or self._checkpoint_due_in(busy) <= 0):
            return False
        offsets = self._checkpoint_offsets()
        if not offsets:
            if not self._commit_marked(force):  # (which confirms first when it commits)
                self.publisher.confirm()
            return True
        self.checkpoint(offsets, final=force)
        return True

    def checkpoint(self, offsets: dict[TopicPartition, int], *, final: bool = False) -> None:
        """The checkpoint order, in one place. With the state changelog:

        1. the commit point: the changelog records of the users changed since the last checkpoint and the
           model are sent (with lineage, profiles and dead letters) and confirmed; then each partition's
           ``__checkpoint__`` marker, carrying the partition's **outbox** (the ``user-segments`` records,
           changes and tombstones, of its users since the last checkpoint), is sent and confirmed;
        2. the outboxes are handed to the producer for ``user-segments``; they are confirmed by the next
           confirm (step 1 of the next checkpoint, an idle turn, or step 3), not waited for here;
        3. at most every ``commit_interval_ms`` (and on a ``final`` checkpoint, at shutdown): everything
           sent is confirmed, then the offsets of the last markers are committed, explicitly, for
           partitions this member still owns (:meth:`_commit_marked`).

        (and, when a checkpoint directory is set, one local snapshot per owned partition after 2).
        Any send that keeps failing raises, so nothing after it happens.

        Why a crash at any point keeps the output contract (``seq`` +1 per change, nothing repeated but
        exact re-sends): before 1 completes, the last marker still names the older offset and none of the
        interval's ``user-segments`` records were sent, so the next owner (whatever its model decides)
        publishes the only version of those changes; after 1, the next owner's restore re-publishes the
        marker's outbox byte for byte (same ``change_id``, same ``seq``) before processing anything and
        resumes the input at the marker's offset, so each user's next change is ``seq`` + 1. Re-processing
        the batch instead would let another member's model publish a different change with the same ``seq``.
        A crash after 1, before the outbox is confirmed or the offsets committed, only repeats the outbox
        (exact re-sends) at the next restore: a restore resumes at the marker's offset, whatever was
        committed. That is why steps 2 and 3 need not hold the loop back: a batch's segment events leave
        one commit point after it, not four round trips.

        Without the changelog (``SEGSTREAM_CHANGELOG=false``): outputs are sent as the batch is processed
        and confirmed here, then the local snapshot is written, then the offsets committed; a crash
        replays from the last commit, and only aligned batches make the re-sent changes the same.
        """
        t0 = time.perf_counter()
        changelog = {tp.partition: off for tp, off in offsets.items()}
        if self.changelog is not None:
            self.changelog.stage(changelog)  # inert until sealed: confirmed along with lineage, profiles, DLQ
        self.publisher.confirm()
        if self.changelog is not None:
            self.changelog.seal(changelog)  # the markers, each with its partition's outbox
            self.publisher.confirm()  # the commit point
            self._marked.update(offsets)
            self.metrics.last_checkpoint.set(time.time())
            self.outputs.publish(*self.changelog.release())
        if self.checkpoints is not None:
            store = self.pipeline.store
            rows = {tp.partition: store.rows_of_partition(tp.partition) for tp in offsets}
            extra = None
            if self.changelog is not None:  # the snapshot as a cache of the changelog up to the marker just confirmed
                at = self.changelog.marker_offsets(list(rows))
                extra = {p: cache_extra(self.changelog, p, r, at.get(p)) for p, r in rows.items()}
            self.checkpoints.write({**self.pipeline.global_state(), "drift": self.metrics.drift.state()}, {
                tp.partition: (off, store.export_rows(rows[tp.partition])) for tp, off in offsets.items()}, extra)
        if self.changelog is not None:
            self._commit_marked(final)
        elif self._commit(offsets):
            self.metrics.last_checkpoint.set(time.time())
        self._last_checkpoint = time.monotonic()
        self._checkpoint_seconds = time.perf_counter() - t0
        self.metrics.checkpoint_duration.observe(self._checkpoint_seconds)
        meta = self.consumer.group_metadata()
        log.debug("checkpoint", extra={"generation": meta.generation_id, "member": meta.member_id,
                                       "offsets": {tp.partition: off for tp, off in offsets.items()}})

    def _commit_marked(self, force: bool) -> bool:
        """With the changelog: commit the offsets of the owned partitions' last markers, once
        ``commit_interval_ms`` has passed since the last commit (or when ``force``d), after confirming
        every record sent so far (the outboxes those markers released among them). Returns whether it
        did (and so confirmed)."""
        if self.changelog is None:
            return False
        owned = self.rebalance.owned()
        due = {tp: off for tp, off in self._marked.items() if tp in owned and self._positions.get(tp) != off}
        if not due or (not force and time.monotonic() - self._last_commit < self.settings.commit_interval_ms / 1000.0):
            return False
        self.publisher.confirm()  # outputs confirmed before the offsets that cover them are committed
        self._commit(due)
        self._last_commit = time.monotonic()
        return True

    def _commit(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        owned = self.rebalance.owned()
        done = {tp: off for tp, off in offsets.items() if tp in owned}
        if not done:
            return {}
        try:
            commit_offsets(self.consumer, done)
        except (CommitFailedError, KafkaError) as exc:
            self.metrics.commit_failures.inc()
            meta = self.consumer.group_metadata()
            for tp, off in done.items():
                log.warning("offset commit failed: %s", exc, extra={
                    "topic": tp.topic, "partition": tp.partition, "offset": off,
                    "generation": meta.generation_id})
            return {}
        self.metrics.commits.inc()
        self._positions = {tp: pos for tp, pos in self._positions.items() if tp in owned}
        self._positions.update(done)
        self.summary.committed.update(done)
        if self.checkpoints is not None:
            self.checkpoints.prune({tp.partition: off for tp, off in done.items()})
        return done

    def _observe(self, result: BatchResult, records: Records, seconds: float) -> None:
        s, p = self.summary, self.pipeline
        s.add_batch(len(records), result)
        self.metrics.observe_batch(result, p, records=len(records),
                                   value_bytes=records.value_bytes(),
                                   seconds=seconds)
        if self.settings.log_level.upper() == "DEBUG":
            meta = self.consumer.group_metadata()
            log.debug("batch", extra={"generation": meta.generation_id, "member": meta.member_id,
                                      "partitions": sorted(set(records.partitions.tolist())),
                                      "first_offset": records.offset, "last_offset": int(records.offsets[-1])})
        if self.on_batch is not None:
            self.on_batch(result, s)
