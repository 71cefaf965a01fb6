"""The Kafka run loop: poll a micro-batch, process it, publish, confirm, commit.

Delivery is at-least-once. A batch's offsets are committed only after every
output it caused (segment changes, dead letters, tombstones) is confirmed by
the broker: see :meth:`StreamRunner.checkpoint`, the one place that order is
written down. A stop request (SIGTERM/SIGINT) lets the current batch finish
and commit before the consumer leaves the group.

Rebalance callbacks run on kafka-python's IO thread, so the listener only
records what happened; the loop acts on it between batches (records of
partitions no longer owned are dropped, never committed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream.kafka_io import Publisher
from stream.metrics import Metrics
from stream.outputs import OutputWriter
from stream.pipeline import BatchResult, Pipeline
from stream.settings import Settings

__all__ = ["StreamRunner", "RunSummary", "RebalanceTracker"]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    events: int = 0
    invalid: int = 0
    changes: int = 0
    batches: int = 0
    stopped_by: str = ""
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class RebalanceTracker(ConsumerRebalanceListener):
    """Records assignment changes without blocking the client's IO thread."""

    def __init__(self, context: Callable[[TopicPartition], dict] | None = None) -> None:
        self._lock = threading.Lock()
        self.assigned: set[TopicPartition] = set()
        self.generations = 0
        # issue 5: per-partition log fields (partition, offset, generation) for warnings
        self.context = context or (lambda tp: {"topic": tp.topic, "partition": tp.partition})

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned -= set(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(str(tp) for tp in revoked)})

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned |= set(assigned)
            self.generations += 1
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned -= set(lost)
        for tp in sorted(lost):
            log.warning("partition lost (not committing it)", extra=self.context(tp))

    def owned(self) -> set[TopicPartition]:
        with self._lock:
            return set(self.assigned)


class StreamRunner:
    def __init__(self, settings: Settings, pipeline: Pipeline, consumer: KafkaConsumer, publisher: Publisher,
                 metrics: Metrics, *, clock: Callable[[], float] = time.time,
                 on_batch: Callable[[BatchResult, RunSummary], None] | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.consumer = consumer
        self.publisher = publisher
        self.outputs = OutputWriter(publisher, settings)
        self.metrics = metrics
        self.clock = clock
        self.on_batch = on_batch
        self.rebalance = RebalanceTracker(self._log_context)
        self.summary = RunSummary()
        self._positions: dict[TopicPartition, int] = {}

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
        last_record = time.monotonic()
        while True:
            if stop.is_set():
                summary.stopped_by = "signal"
                break
            if max_events is not None and summary.events >= max_events:
                summary.stopped_by = "max-events"
                break
            records = self._collect(stop)
            if not records:
                if idle_exit_s is not None and time.monotonic() - last_record >= idle_exit_s:
                    summary.stopped_by = "idle"
                    break
                continue
            last_record = time.monotonic()
            self._process(records)
        return summary

    def _collect(self, stop: threading.Event) -> list:
        """One micro-batch: up to ``batch_max_events`` records or ``batch_max_wait_ms`` after the first."""
        max_n = self.settings.batch_max_events
        wait_s = self.settings.batch_max_wait_ms / 1000.0
        records: list = []
        deadline: float | None = None
        while not stop.is_set():
            timeout_ms = 200 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_n - len(records))
            for recs in polled.values():
                records.extend(recs)
            if records and deadline is None:
                deadline = time.monotonic() + wait_s
            if len(records) >= max_n or (deadline is not None and time.monotonic() >= deadline):
                break
            if not records:
                break  # idle tick: let the caller check stop / idle exit
        owned = self.rebalance.owned()
        kept = [r for r in records if TopicPartition(r.topic, r.partition) in owned]
        if len(kept) != len(records):
            dropped: dict[TopicPartition, int] = {}
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                if tp not in owned:
                    dropped[tp] = min(dropped.get(tp, r.offset), r.offset)
            for tp, first in dropped.items():
                log.warning("dropped records of a partition revoked during the batch (re-read by its new owner)",
                            extra={**self._log_context(tp), "offset": first})
        return kept

    def _process(self, records: list) -> None:
        t0 = time.perf_counter()
        result = self.pipeline.process_records([r.value for r in records])
        self.outputs.write(result, records, self.clock())
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset + 1 > offsets.get(tp, -1):
                offsets[tp] = r.offset + 1
        self.checkpoint(offsets)
        confirmed_at = time.time()
        ts = np.fromiter((r.timestamp for r in records), dtype=np.float64, count=len(records))
        self.metrics.event_to_publish.observe_many(confirmed_at - ts / 1000.0)
        self._observe(result, records, time.perf_counter() - t0)

    def checkpoint(self, offsets: dict[TopicPartition, int]) -> None:
        """The checkpoint order, in one place:

        1. flush outputs and confirm every send (raises, so nothing is committed, if any fails);
        2. persist state and model with the offsets they reflect (no durable state store yet: state is
           rebuilt by re-consuming, so this step is empty);
        3. commit the source offsets, explicitly, for partitions this member still owns.
        """
        self.publisher.confirm()
        self._commit(offsets)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = self.rebalance.owned()
        commit = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items() if tp in owned}
        if not commit:
            return
        try:
            self.consumer.commit(commit)
        except (CommitFailedError, KafkaError) as exc:
            self.metrics.commit_failures.inc()
            meta = self.consumer.group_metadata()
            for tp, om in commit.items():
                log.warning("offset commit failed: %s", exc, extra={
                    "topic": tp.topic, "partition": tp.partition, "offset": om.offset,
                    "generation": meta.generation_id})
            return
        self.metrics.commits.inc()
        done = {tp: om.offset for tp, om in commit.items()}
        self._positions = {tp: pos for tp, pos in self._positions.items() if tp in owned}
        self._positions.update(done)
        self.summary.committed.update(done)

    def _observe(self, result: BatchResult, records: list, seconds: float) -> None:
        s, p = self.summary, self.pipeline
        s.events += len(records)
        s.invalid += len(result.rejected)
        s.changes += len(result.changes)
        s.batches += 1
        self.metrics.observe_batch(result, p, records=len(records),
                                   value_bytes=sum(len(r.value) for r in records if r.value is not None),
                                   seconds=seconds)
        lags = {}
        for tp, pos in self._positions.items():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                lags[(tp.topic, tp.partition)] = max(0, hw - pos)
        self.metrics.set_lag(lags)
        if self.on_batch is not None:
            self.on_batch(result, s)
