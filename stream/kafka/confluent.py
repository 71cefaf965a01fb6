"""The run loop's consumer and producer on confluent-kafka (librdkafka), behind the seam's interface.

``SEGSTREAM_KAFKA_CLIENT=confluent`` swaps kafka-python for librdkafka in the
run loop: :class:`ConfluentConsumer` answers the calls the run loop makes of
kafka-python's ``KafkaConsumer`` (``poll`` returning ``{TopicPartition:
[Records]}``, ``seek``, ``position``, ``committed``, ``highwater``,
``group_metadata``, ``subscribe(listener=...)``, ``commit``) and
:class:`ConfluentProducer` the calls :class:`~stream.kafka.clients.Publisher`
makes of a ``KafkaProducer`` (``send`` returning a future, ``flush``,
``partitions_for``). Both speak the seam's types: kafka-python's
``TopicPartition`` as keys, its ``KafkaError``/``CommitFailedError`` as
errors, so the run loop, its commit order and its dead letters are the same
on either client.

What librdkafka does differently, and how it is bridged:

- ``consume(n)`` hands back one ``Message`` object per record (the client
  forces that); :meth:`ConfluentConsumer.poll` turns a whole call's messages
  into :class:`~stream.kafka.records.Records` columns at once.
- Rebalance callbacks run inside ``consume()`` on the calling thread (not on
  an IO thread as in kafka-python); they are forwarded to the same
  :class:`~stream.kafka.rebalance.RebalanceTracker` events.
- librdkafka has no call for the group generation: ``group_metadata()`` reads
  it from ``consumer_group_metadata()``, which confluent-kafka returns as
  librdkafka's serialised form (``CGMDv2:``, then the generation as a
  native-endian int32: :func:`generation_of`); should that form change, the
  number of assignments this member received stands in (one warning).
- ``highwater`` is the log end offset of the partition's last fetch response
  (``get_watermark_offsets(cached=True)``): a ListOffsets query (uncached) is
  wrong on Tansu for batches of several records.
- A consumer without a group is not allowed by librdkafka; with
  ``group_id=None`` the consumer gets a private group id it never joins or
  commits to (``assign`` only).
- The producer is idempotent and partitions keyed records with
  ``murmur2_random``, Kafka's (and kafka-python's) default partitioner, so a
  key lands in the same partition on either client.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from kafka.errors import CommitFailedError, KafkaError

from stream.kafka.consumer import TopicPartition
from stream.kafka.records import Records
from stream.kafka.security import librdkafka_security
from stream.settings import Settings

__all__ = ["ConfluentConsumer", "ConfluentProducer", "GroupMetadata", "consumer_config", "producer_config",
           "generation_of", "require_confluent", "MISSING_EXTRA"]

log = logging.getLogger(__name__)

MISSING_EXTRA = ("SEGSTREAM_KAFKA_CLIENT=confluent needs the confluent-kafka package: "
                 "pip install segstream[librdkafka]")

# librdkafka error codes meaning "the group moved on": the commit is refused, not lost in transit
_GROUP_MOVED = {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID",
                "_ASSIGNMENT_LOST", "_STATE"}


def require_confluent() -> Any:
    """The ``confluent_kafka`` module, or one clear error naming the extra that installs it."""
    try:
        import confluent_kafka
    except ImportError:
        raise SystemExit(MISSING_EXTRA) from None
    return confluent_kafka


class GroupMetadata(NamedTuple):
    """What the run loop logs of the group (kafka-python's ``group_metadata()`` fields it reads)."""

    generation_id: int
    member_id: str


_CGMD = b"CGMDv2:"


def generation_of(serialised: bytes) -> int | None:
    """The group generation in librdkafka's serialised consumer group metadata (``None``: another form).

    >>> generation_of(b"CGMDv2:" + (7).to_bytes(4, sys.byteorder, signed=True) + b"g\\x00member\\x00\\x01")
    7
    >>> generation_of(b"something else") is None
    True
    """
    if not isinstance(serialised, bytes) or not serialised.startswith(_CGMD) or len(serialised) < len(_CGMD) + 4:
        return None
    return int.from_bytes(serialised[len(_CGMD):len(_CGMD) + 4], sys.byteorder, signed=True)


def _base(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap, "client.id": settings.client_id,
            **librdkafka_security(settings)}


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka consumer configuration from ``settings`` (the same choices as kafka-python's consumer)."""
    cfg: dict[str, Any] = {
        **_base(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 8 << 20,
        # librdkafka fetches in its own thread, ahead of consume(). Apache Kafka answers a waiting fetch as
        # soon as a record arrives, so there this only bounds an idle fetch; the embedded broker answers it
        # on its own timer (records wait up to about half of this, bench/fetch_wait.py), yet shorter waits
        # (tied to the batch wait, or 30-50 ms) made it answer so many fetches that runs slowed down phase
        # after phase (docs/performance.md)
        "fetch.wait.max.ms": 100,
    }
    if settings.group_instance_id:
        cfg["group.instance.id"] = settings.group_instance_id
    cfg.update(overrides)
    if cfg.get("group.id") is None:  # librdkafka wants one even to assign(); this one is never joined
        cfg["group.id"] = f"segstream-nogroup-{uuid.uuid4().hex[:12]}"
    if cfg.get("group.instance.id") is None:
        cfg.pop("group.instance.id", None)
    return cfg


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka producer configuration: acks from all in-sync replicas, idempotent, Kafka's key hash."""
    cfg: dict[str, Any] = {
        **_base(settings),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 256 << 10,
        "message.max.bytes": 8 << 20,
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
        "log.connection.close": False,
    }
    cfg.update(overrides)
    return cfg


def _kp(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _error(exc: Exception) -> KafkaError:
    """A librdkafka exception as the seam's error: ``CommitFailedError`` when the group moved on."""
    err = exc.args[0] if exc.args else None
    name = err.name() if hasattr(err, "name") else ""
    text = err.str() if hasattr(err, "str") else str(exc)
    if name in _GROUP_MOVED:
        return CommitFailedError(f"{name}: {text}")
    return KafkaError(f"{name}: {text}" if name else text)


class ConfluentConsumer:
    """kafka-python's consumer interface, as the run loop uses it, over a librdkafka ``Consumer``."""

    def __init__(self, settings: Settings, *topics: str, **overrides: Any) -> None:
        ck = require_confluent()
        self._ck = ck
        self.config = consumer_config(settings, **overrides)
        try:
            self._consumer = ck.Consumer(self.config)
        except ck.KafkaException as exc:
            raise SystemExit(f"librdkafka refused the consumer configuration: {_error(exc)}") from None
        self.max_records = settings.batch_max_events
        self._positions: dict[TopicPartition, int] = {}  # next offset to hand out, once known
        self._assignments = 0
        self._warned = False
        self._listener: Any = None
        if topics:
            self.subscribe(list(topics))

    # ----- group membership -------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Join the group on ``topics``; ``listener`` (a RebalanceListener) hears every change of the assignment."""
        self._listener = listener
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        tps = [_kp(p) for p in partitions]
        self._assignments += 1
        for tp in tps:
            self._positions.pop(tp, None)
        if self._listener is not None:
            self._listener.on_partitions_assigned(tps)

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        tps = [_kp(p) for p in partitions]
        for tp in tps:
            self._positions.pop(tp, None)
        if self._listener is not None:
            self._listener.on_partitions_revoked(tps)

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        tps = [_kp(p) for p in partitions]
        for tp in tps:
            self._positions.pop(tp, None)
        if self._listener is not None:
            self._listener.on_partitions_lost(tps)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read ``partitions`` without the group (from their committed offset, else the earliest)."""
        tps = list(partitions)
        self._positions = {}
        self._consumer.assign([self._ck.TopicPartition(tp.topic, tp.partition) for tp in tps])

    def assignment(self) -> set[TopicPartition]:
        return {_kp(p) for p in self._consumer.assignment()}

    def group_metadata(self) -> GroupMetadata:
        """The group generation (-1 before joining) and librdkafka's member id."""
        generation = generation_of(self._consumer.consumer_group_metadata())
        if generation is None:
            if not self._warned:
                self._warned = True
                log.warning("librdkafka's group metadata has an unknown form: the number of assignments stands "
                            "in for the group generation in logs")
            generation = self._assignments if self._assignments else -1
        return GroupMetadata(generation, self._consumer.memberid() or "")

    # ----- fetching -----------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Records]]:
        """Up to ``max_records`` records as columns, one block per partition, in fetch order.

        Rebalance callbacks run inside this call. A message carrying an error is
        logged and skipped, unless librdkafka calls the error fatal: then
        ``KafkaError`` is raised.
        """
        n = max(1, min(max_records or self.max_records, 1_000_000))
        # librdkafka's batch consume waits for all n messages or the whole timeout: take what is ready, and
        # when nothing is, wait for the first message only (then what came with it), as kafka-python's poll does
        msgs = self._consumer.consume(num_messages=n, timeout=0)
        if not msgs and timeout_ms > 0:
            msgs = self._consumer.consume(num_messages=1, timeout=timeout_ms / 1000.0)
            if msgs and n > 1:
                msgs += self._consumer.consume(num_messages=n - 1, timeout=0)
        if not msgs:
            return {}
        bad = [m for m in msgs if m.error() is not None]
        if bad:
            msgs = self._errors(msgs, bad)
            if not msgs:
                return {}
        return self._columns(msgs)

    def _errors(self, msgs: list[Any], bad: list[Any]) -> list[Any]:
        for m in bad:
            err = m.error()
            if err.fatal():
                raise KafkaError(f"librdkafka fatal error: {err.name()}: {err.str()}")
            if err.code() != self._ck.KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err.str(), extra={"topic": m.topic(), "partition": m.partition()})
        return [m for m in msgs if m.error() is None]

    def _columns(self, msgs: list[Any]) -> dict[TopicPartition, list[Records]]:
        """One pass of per-message accessors (what librdkafka's Python client gives), then numpy by partition."""
        topic = msgs[0].topic()
        if any(m.topic() != topic for m in msgs):  # a consumer of several topics: one Records per topic
            return self._by_topic(msgs)
        count = len(msgs)
        partitions = np.fromiter((m.partition() for m in msgs), dtype=np.int64, count=count)
        offsets = np.fromiter((m.offset() for m in msgs), dtype=np.int64, count=count)
        timestamps = np.fromiter((m.timestamp()[1] for m in msgs), dtype=np.int64, count=count)
        keys = [m.key() for m in msgs]
        values = [m.value() for m in msgs]
        headers = [m.headers() for m in msgs]
        hdrs = [list(h or []) for h in headers] if any(headers) else None
        block = Records(topic, partitions, offsets, timestamps, keys, values, hdrs)
        out: dict[TopicPartition, list[Records]] = {}
        first = int(partitions[0])
        if (partitions == first).all():
            parts = {first: block}
        else:
            parts = {p: block.select(partitions == p) for p in np.unique(partitions).tolist()}
        for p, recs in parts.items():
            tp = TopicPartition(topic, p)
            self._positions[tp] = int(recs.offsets[-1]) + 1
            out[tp] = [recs]
        return out

    def _by_topic(self, msgs: list[Any]) -> dict[TopicPartition, list[Records]]:
        out: dict[TopicPartition, list[Records]] = {}
        for topic in sorted({m.topic() for m in msgs}):
            out.update(self._columns([m for m in msgs if m.topic() == topic]))
        return out

    # ----- offsets ------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next (records already fetched past it are dropped by librdkafka)."""
        self._seek(tp, offset)
        self._positions[tp] = offset

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps or self.assignment():
            self._seek(tp, self._ck.OFFSET_BEGINNING)
            self._positions.pop(tp, None)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        target = self._ck.TopicPartition(tp.topic, tp.partition, offset)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self._consumer.seek(target)
                return
            except self._ck.KafkaException as exc:  # a partition assigned but not fetching yet: _STATE
                if time.monotonic() >= deadline:
                    raise _error(exc) from None
                time.sleep(0.01)

    def position(self, tp: TopicPartition) -> int:
        """The next offset to be handed out: after the last record polled, or where it was sought,
        else librdkafka's fetch position, else the committed offset, else the log start."""
        pos = self._positions.get(tp)
        if pos is not None:
            return pos
        [got] = self._consumer.position([self._ck.TopicPartition(tp.topic, tp.partition)])
        if got.offset >= 0:
            return got.offset
        committed = self.committed(tp)
        if committed is not None:
            return committed
        low, _high = self._consumer.get_watermark_offsets(self._ck.TopicPartition(tp.topic, tp.partition),
                                                          timeout=10.0)
        return max(0, low)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (``None``: nothing committed)."""
        try:
            [got] = self._consumer.committed([self._ck.TopicPartition(tp.topic, tp.partition)], timeout=10.0)
        except self._ck.KafkaException as exc:
            raise _error(exc) from None
        return got.offset if got.offset >= 0 else None

    def highwater(self, tp: TopicPartition) -> int | None:
        """Log end offset of ``tp`` as its last fetch response gave it (``None`` before any fetch)."""
        _low, high = self._consumer.get_watermark_offsets(self._ck.TopicPartition(tp.topic, tp.partition),
                                                          cached=True)
        return high if high is not None and high >= 0 else None

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        """Commit exactly ``offsets`` (ints, or kafka-python ``OffsetAndMetadata``) synchronously.

        Raises ``CommitFailedError`` when the group moved on, another ``KafkaError`` otherwise.
        """
        tps = [self._ck.TopicPartition(tp.topic, tp.partition, int(getattr(off, "offset", off)))
               for tp, off in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except self._ck.KafkaException as exc:
            raise _error(exc) from None
        failed = [p for p in result or [] if p.error is not None]
        if failed:
            err = failed[0].error
            cls = CommitFailedError if err.name() in _GROUP_MOVED else KafkaError
            raise cls(f"commit of {len(failed)} partition(s) failed: {err.name()}: {err.str()}")

    def close(self, autocommit: bool = False) -> None:
        """Leave the group (no commit: auto-commit is off) and free the client."""
        self._consumer.close()


class DeliveryFuture:
    """The outcome of one ``produce``: what :class:`~stream.kafka.clients.Publisher` asks of kafka-python's future."""

    __slots__ = ("_producer", "is_done", "error", "offset")

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.is_done = False
        self.error: Any = None
        self.offset: int | None = None  # the record's offset, once delivered

    def __call__(self, err: Any, msg: Any) -> None:  # librdkafka's delivery report, run inside poll/flush
        self.error = err
        if err is None and msg is not None:
            self.offset = msg.offset()
        self.is_done = True

    def succeeded(self) -> bool:
        return self.is_done and self.error is None

    def get(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else 60.0)
        while not self.is_done and time.monotonic() < deadline:
            self._producer.poll(0.05)
        if not self.is_done:
            raise KafkaError("no delivery report within the timeout")
        if self.error is not None:
            raise KafkaError(f"{self.error.name()}: {self.error.str()}")


class ConfluentProducer:
    """kafka-python's producer interface, as :class:`~stream.kafka.clients.Publisher` uses it, over librdkafka."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        ck = require_confluent()
        self._ck = ck
        self.config = producer_config(settings, **overrides)
        try:
            self._producer = ck.Producer(self.config)
        except ck.KafkaException as exc:
            raise SystemExit(f"librdkafka refused the producer configuration: {_error(exc)}") from None
        self._partitions: dict[str, list[int]] = {}

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> DeliveryFuture:
        """Queue one record; its delivery report fills the returned future (on ``flush`` or ``get``)."""
        fut = DeliveryFuture(self._producer)
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": fut}
        if headers:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kw)
                return fut
            except BufferError:  # the local queue is full: serve delivery reports, then try again
                self._producer.poll(0.05)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout if timeout is not None else -1)

    def partitions_for(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            meta = self._producer.list_topics(topic, timeout=10.0).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaError(f"no metadata for topic {topic}: {getattr(meta, 'error', None)}")
            parts = self._partitions[topic] = sorted(meta.partitions)
        return parts

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``timeout``), then free librdkafka's handle (its threads stop)."""
        if self._producer is not None:
            self._producer.flush(timeout if timeout is not None else -1)
            self._producer = None
