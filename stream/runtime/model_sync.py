"""The model topic: how instances of one group share a segment model (Kafka edge of
:mod:`state.global_model`).

One partition, read from the beginning by every instance with its own
group-less consumer, so that all instances see the same records in the same
order. Record keys: ``model`` for models (proposals), ``summary/<instance>``
for summaries, so a compacted topic keeps the latest of each. Values are
msgpack maps, schema ``segstream.model/1`` (documented in docs/contracts.md).

At start-up :meth:`ModelSync.catch_up` reads the topic to its end before the
first input record is processed, so a new or restarted instance starts from
the latest announced model instead of re-learning. The end is where the
consumer's position reaches the high-water mark reported by the fetches (not
``end_offsets()``). Afterwards :meth:`ModelSync.pump` runs between
micro-batches: it applies what arrived and sends what the segmenter has to
say; sends are confirmed with the batch's outputs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack

from state.global_model import SCHEMA, GlobalKMeans, model_digest
from stream.kafka import Consumer, TopicPartition
from stream.kafka.clients import Publisher, make_reader_consumer
from stream.kafka.records import as_records
from stream.observability.metrics import Metrics
from stream.settings import Settings

__all__ = ["ModelSync"]

GONE_AFTER = 10  # a member silent for this many SEGSTREAM_MODEL_SILENT_AFTER_S loses its silence series

log = logging.getLogger(__name__)


class ModelSync:
    """``input_partitions``: how many partitions the input topic has (the leader waits, up to
    ``SEGSTREAM_MODEL_FIRST_WAIT_MS``, for summaries covering all of them before it proposes v1)."""

    def __init__(self, settings: Settings, segmenter: GlobalKMeans, publisher: Publisher,
                 metrics: Metrics | None = None, consumer: Consumer | None = None, *,
                 input_partitions: int = 0) -> None:
        self.segmenter = segmenter
        self.input_partitions = input_partitions
        self._silent: set[str] = set()  # members past SEGSTREAM_MODEL_SILENT_AFTER_S (logged once each)
        self._shown: set[str] = set()  # members with a silence series
        self.publisher = publisher
        self.metrics = metrics
        self.tp = TopicPartition(settings.model_topic, 0)
        # on the run loop's client (SEGSTREAM_KAFKA_CLIENT), so that its security options (OAUTHBEARER,
        # GSSAPI: librdkafka only) reach the model topic too
        self.consumer = consumer or make_reader_consumer(settings, f"{settings.client_id}-model")
        self.consumer.assign([self.tp])
        self.consumer.seek_to_beginning(self.tp)
        self.leader = False
        self._quiet = False  # while catching up: one "model applied" line for the model reached, not one per record

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Read the model topic up to its high-water mark; returns the records read."""
        deadline = time.monotonic() + timeout_s
        n = 0
        self._quiet = True
        try:
            while time.monotonic() < deadline:
                n += self._read(200)
                hw = self.consumer.highwater(self.tp)
                if hw is not None and self.consumer.position(self.tp) >= hw:
                    break
        finally:
            self._quiet = False
        m = self.segmenter.model
        if m is not None:
            self._log_applied(m, {}, self.consumer.position(self.tp) - 1)
        log.info("model topic read to its end: %d records, model version %s", n, None if m is None else m.version,
                 extra={"topic": self.tp.topic, "offset": self.consumer.position(self.tp)})
        return n

    def pump(self, *, leader: bool, partitions: list[int] | None = None) -> None:
        """Apply what arrived on the model topic; send this instance's summaries and proposals
        (``partitions``: the input partitions this instance owns, named in its summaries)."""
        if leader != self.leader:
            self.leader = leader
            log.info("model leader: %s", "this instance" if leader else "another instance",
                     extra={"instance": self.segmenter.instance_id})
            if self.metrics is not None:
                self.metrics.model_leader.set(1 if leader else 0)
        self._read(0)
        self._watch_members()
        for msg in self.segmenter.outgoing(leader=leader, partitions=partitions,
                                           n_partitions=self.input_partitions or None):
            key = b"model" if msg["kind"] == "model" else f"summary/{msg['instance']}".encode()
            self.publisher.send(self.tp.topic, key, msgpack.packb(msg, use_bin_type=True))
            if self.metrics is not None:
                self.metrics.model_messages.labels(msg["kind"], "sent").inc()

    def _watch_members(self) -> None:
        """Seconds since each member's latest summary (gauge); one log line when a member falls silent
        (left out of merges) and one when it speaks again."""
        limit = self.segmenter.silent_after_s
        for member, age in self.segmenter.silence().items():
            if age > GONE_AFTER * limit:  # long gone (an instance id of a past run): no series kept for it
                if member in self._shown and self.metrics is not None:
                    self.metrics.model_member_silent.remove(member)
                self._shown.discard(member)
                continue
            if self.metrics is not None:
                self.metrics.model_member_silent.labels(member).set(age)
                self._shown.add(member)
            if age > limit and member not in self._silent:
                self._silent.add(member)
                log.warning("model member %s silent for %.0f s: left out of merges", member, age,
                            extra={"member": member, "instance": self.segmenter.instance_id})
            elif age <= limit and member in self._silent:
                self._silent.discard(member)
                log.info("model member %s sends summaries again", member, extra={"member": member})

    def _read(self, timeout_ms: int) -> int:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=1000)
        n = 0
        for tp, fetched in polled.items():
            block = as_records(tp, fetched)  # kafka-python's ConsumerRecords or librdkafka's columns
            for i in range(len(block)):
                n += 1
                self._apply(block[i])
        return n

    def _apply(self, record: Any) -> None:
        try:
            msg = msgpack.unpackb(record.value, raw=False)
            if not isinstance(msg, dict) or msg.get("schema") != SCHEMA:
                raise ValueError(f"not a {SCHEMA} map")
        except Exception as exc:  # a foreign record on the topic: skip it, never crash
            log.warning("model topic: skipped an unreadable record: %s", exc,
                        extra={"topic": record.topic, "partition": record.partition, "offset": record.offset})
            if self.metrics is not None:
                self.metrics.model_messages.labels("invalid", "received").inc()
            return
        if self.metrics is not None:
            self.metrics.model_messages.labels(str(msg.get("kind")), "received").inc()
        applied = self.segmenter.receive(msg)
        if applied is not None and not self._quiet:
            self._log_applied(applied, msg, record.offset)

    def _log_applied(self, model: Any, msg: dict, offset: int) -> None:
        log.info("model applied", extra={
            "model_version": model.version, "digest": model_digest(model.centroids, model.segment_ids),
            "proposer": msg.get("proposer"), "instances": msg.get("instances"), "members": msg.get("members"),
            "offset": offset,
            "instance": self.segmenter.instance_id})

    def close(self) -> None:
        self.consumer.close(autocommit=False)
