"""Every use of kafka-python's internals, in one module, checked at start-up before it is used.

Two fast paths reach below kafka-python's public API:

- **fetch** (:func:`install_columnar_fetch`): a subclass of the fetcher's
  ``Fetcher.PartitionRecords`` hands whole record batches to
  :func:`stream.kafka.records.decode_batch` instead of building one
  ``ConsumerRecord`` per record. It reads ``KafkaConsumer._fetcher`` and a
  record batch's ``_buffer``, overrides ``_unpack_records``,
  ``_maybe_skip_record`` and ``take``, and sets ``_next_inline_exception``.
- **produce** (:func:`append_run`): a run encoded by
  :mod:`stream.kafka.batch_produce` goes into a ``MemoryRecordsBuilder``
  whose inner ``DefaultRecordBatchBuilder`` fields are set directly, wrapped in
  a ``ProducerBatch`` and queued on the producer's ``RecordAccumulator`` under
  its partition lock (``_accumulator``, ``_tp_lock``, ``_batches``,
  ``_incomplete``, ``_appends_in_progress``, ``_closed``,
  ``_transaction_manager``, ``_sender``); :func:`run_error` reads the batch's
  ``produce_future``.

A kafka-python release may move or change any of these, and a wrong guess
would fail at start-up, or worse, silently. So before a fast path is used,
:func:`check_fetch` / :func:`check_produce` look for every name and run the
path once on a tiny input, without a broker: the fetch hook decodes two
batches built by kafka-python's own ``DefaultRecordBatchBuilder`` exactly like
kafka-python's iterator and moves the fetch position like it; a run goes
through the accumulator, takes a later ``send`` behind it, closes with a
producer id and reads back through ``MemoryRecords``. A failed check turns the
path off: kafka-python's own record iterator for fetch, one
``KafkaProducer.send`` per record for produce, one warning line naming what is
missing or different, and the gauge ``segstream_kafka_fast_path{path}`` at 0.
The settings ``columnar_fetch`` / ``columnar_produce`` stay the user's switch;
a check can only turn a path off. The checks run once per client built; the
fast paths themselves do no more per record than before they moved here.

``SEGSTREAM_KAFKA_COMPAT_FORCE_FALLBACK`` (``fetch``, ``produce`` or
``fetch,produce``) makes the named checks fail: a test and diagnostic switch,
read at every check, so child processes honour it too.
"""

from __future__ import annotations

import importlib
import logging
import os
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import kafka
from kafka.errors import CorruptRecordError, IllegalStateError, KafkaError
from kafka.structs import TopicPartition

from stream.kafka.batch_produce import BATCH_HEADER, Run, encode_runs
from stream.kafka.records import Records, as_records, decode_batch

if TYPE_CHECKING:
    from stream.observability.metrics import Metrics

__all__ = ["FORCE_FALLBACK_ENV", "PATHS", "Check", "check_fetch", "check_produce", "forced_fallback",
           "install_columnar_fetch", "use_columnar_produce", "append_run", "run_builder", "run_error"]

log = logging.getLogger(__name__)

FORCE_FALLBACK_ENV = "SEGSTREAM_KAFKA_COMPAT_FORCE_FALLBACK"
PATHS = ("fetch", "produce")

_CONTROL = 0x20  # batch attribute: a transaction marker, not data

# kafka-python classes from modules it does not document as public; None when a release moved one
_WHERE = {
    "Fetcher": "kafka.consumer.fetcher.Fetcher",
    "MemoryRecords": "kafka.record.memory_records.MemoryRecords",
    "MemoryRecordsBuilder": "kafka.record.memory_records.MemoryRecordsBuilder",
    "DefaultRecordBatchBuilder": "kafka.record.default_records.DefaultRecordBatchBuilder",
    "ProducerBatch": "kafka.producer.producer_batch.ProducerBatch",
    "RecordAccumulator": "kafka.producer.record_accumulator.RecordAccumulator",
}


def _find(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


Fetcher = _find(_WHERE["Fetcher"])
MemoryRecords = _find(_WHERE["MemoryRecords"])
MemoryRecordsBuilder = _find(_WHERE["MemoryRecordsBuilder"])
DefaultRecordBatchBuilder = _find(_WHERE["DefaultRecordBatchBuilder"])
ProducerBatch = _find(_WHERE["ProducerBatch"])
RecordAccumulator = _find(_WHERE["RecordAccumulator"])


class Check(NamedTuple):
    """Outcome of a start-up check: ``problem`` is ``None`` when the internals are there and behave."""

    path: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def forced_fallback() -> frozenset[str]:
    """The paths ``SEGSTREAM_KAFKA_COMPAT_FORCE_FALLBACK`` names (a misspelt one raises, never passes silently)."""
    names = frozenset(n.strip() for n in os.environ.get(FORCE_FALLBACK_ENV, "").split(",") if n.strip())
    if names - set(PATHS):
        raise ValueError(f"{FORCE_FALLBACK_ENV}={os.environ[FORCE_FALLBACK_ENV]!r}: "
                         f"names {sorted(names - set(PATHS))}, expected some of {list(PATHS)}")
    return names


def _absent(*names: str) -> list[str]:
    return [_WHERE[n] for n in names if globals()[n] is None]


def _lacking(obj: Any, label: str, names: tuple[str, ...]) -> list[str]:
    return [f"{label}.{n}" for n in names if not hasattr(obj, n)]


def _run_check(path: str, missing: list[str], probe: Any, *args: Any) -> Check:
    if path in forced_fallback():
        return Check(path, f"forced by {FORCE_FALLBACK_ENV}")
    if missing:
        return Check(path, "missing " + ", ".join(missing))
    try:
        probe(*args)
    except Exception as exc:  # anything a changed internal raises means: do not use it
        return Check(path, f"{type(exc).__name__}: {exc}")
    return Check(path, None)


def _report(metrics: Metrics | None, path: str, on: bool) -> None:
    if metrics is not None:
        metrics.kafka_fast_path.labels(path=path).set(1 if on else 0)


def _warn(check: Check, fallback: str) -> None:
    log.warning("kafka-python %s: columnar %s off (%s); %s", kafka.__version__, check.path, check.problem, fallback,
                extra={"kafka_fast_path": check.path})


# ----- fetch ---------------------------------------------------------------------

class _Taken:
    """What ``take`` hands kafka-python's fetcher: iterates blocks, ``len`` counts records."""

    __slots__ = ("blocks", "count")

    def __init__(self) -> None:
        self.blocks: list[Records] = []
        self.count = 0

    def __iter__(self) -> Iterator[Records]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return self.count


def _partition_records_class(base: type) -> type:
    class ColumnarPartitionRecords(base):  # type: ignore[misc, valid-type]
        """kafka-python's per-fetch record source, yielding :class:`Records` (one per record batch)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._rest: tuple[Records, int] | None = None
            super().__init__(*args, **kwargs)

        def _maybe_skip_record(self, item: Any) -> bool:
            return False  # blocks are cut at the fetch offset when decoded

        def _unpack_records(self, tp: TopicPartition, records: Any, key_deserializer: Any,
                            value_deserializer: Any) -> Iterator[tuple[Records, int]]:
            """(block, offset after it) per record batch; control batches only move the position."""
            batch = records.next_batch()
            while batch is not None:
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(f"Record batch for partition {tp} at offset {batch.base_offset} "
                                             "failed crc check")
                if batch.magic >= 2:
                    self.leader_epoch = batch.leader_epoch
                    if batch.attributes & _CONTROL:
                        block, end = None, batch.next_offset
                    else:  # the whole batch as kafka-python holds it: no public accessor exists
                        block, end = decode_batch(batch._buffer, tp, self.fetch_offset), batch.next_offset
                else:  # message format v0/v1: kafka-python's iterator, then the same columns
                    block = as_records(tp, [r for r in batch if r.offset >= self.fetch_offset])
                    end = int(block.offsets[-1]) + 1 if len(block) else self.next_fetch_offset
                if block is not None and len(block):
                    self.records_read += len(block)
                    self.bytes_read += getattr(batch, "size_in_bytes", 0)
                    yield block, end
                else:
                    self.next_fetch_offset = max(self.next_fetch_offset, end)
                batch = records.next_batch()
            self.drain()

        def take(self, n: int | None = None) -> _Taken:
            self._maybe_raise_next_inline_exception()
            taken = _Taken()
            try:
                while n is None or taken.count < n:
                    item, self._rest = self._rest, None
                    if item is None:
                        if self.record_iterator is None:
                            break
                        item = next(self.record_iterator, None)
                        if item is None:
                            break
                    block, end = item
                    room = len(block) if n is None else n - taken.count
                    if len(block) > room:
                        rest = block.select(slice(room, None))
                        block, self._rest = block.select(slice(0, room)), (rest, end)
                        end = rest.offset
                    taken.blocks.append(block)
                    taken.count += len(block)
                    self.next_fetch_offset = end  # where kafka-python moves the position after this take
            except Exception as exc:
                if not taken.count:
                    raise
                self._next_inline_exception = exc
            return taken

        def __bool__(self) -> bool:
            return self._rest is not None or self.record_iterator is not None

        def drain(self) -> None:
            self._rest = None
            super().drain()

    return ColumnarPartitionRecords


_PARTITION_RECORDS_NAMES = ("_unpack_records", "_maybe_skip_record", "take", "drain",
                            "_maybe_raise_next_inline_exception")
_PROBE_TP = TopicPartition("segstream-compat-probe", 0)
_PROBE_TS = 1_700_000_000_000


def _probe_batches() -> bytes:
    """Two v2 batches built by kafka-python: offsets 0-3 (nulls, headers, a 2-byte length), 4-6 (gzip)."""
    records = [
        [(None, b"v0", []), (b"k1", None, [("h", b"x"), ("n", None)]), (b"k2", b"v" * 200, []), (b"", b"", [])],
        [(b"k4", b"v4", []), (None, None, [("h", b"")]), (b"k6", b"v6" * 40, [])],
    ]
    out = bytearray()
    base = 0
    for compression, batch in zip((0, 1), records):
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0,
                                            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
        for i, (key, value, headers) in enumerate(batch):
            builder.append(i, timestamp=_PROBE_TS + 7 * i, key=key, value=value, headers=headers)
        raw = bytearray(builder.build())
        struct.pack_into(">q", raw, 0, base)  # the base offset is outside the CRC
        out += raw
        base += len(batch)
    return bytes(out)


def _rows(records: Records) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in map(records.__getitem__,
                                                                                   range(len(records)))]


def _probe_fetch(base: type) -> None:
    raw = _probe_batches()
    reference = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for b in MemoryRecords(raw) for r in b]
    # the decoder, batch by batch, against kafka-python's iterator
    ours = MemoryRecords(raw)
    decoded: list[tuple] = []
    while (batch := ours.next_batch()) is not None:
        decoded += _rows(decode_batch(batch._buffer, _PROBE_TP))
    if decoded != reference or len(reference) != 7:
        raise AssertionError("decode_batch differs from kafka-python's record iterator")
    # the hook, built as the fetcher builds it, from offset 2: a take that splits the second batch, then the rest
    part = _partition_records_class(base)(
        2, _PROBE_TP, MemoryRecords(raw), key_deserializer=None, value_deserializer=None, check_crcs=True,
        aborted_transactions=None, metric_aggregator=None, on_drain=lambda _: None)
    first = part.take(3)
    after_first = part.next_fetch_offset
    rest = part.take(None)
    got = [_rows(Records.concat(list(t))) for t in (first, rest)]
    if got != [reference[2:5], reference[5:]] or (len(first), after_first) != (3, 5):
        raise AssertionError("the fetcher hook's takes differ from kafka-python's records or positions")
    if part.next_fetch_offset != 7 or part:
        raise AssertionError("the fetcher hook does not end at the batches' end")


def check_fetch(base: type | None = None) -> Check:
    """Whether the columnar fetch can replace ``base`` (default: ``Fetcher.PartitionRecords``)."""
    missing = _absent("MemoryRecords", "DefaultRecordBatchBuilder")
    if base is None:
        base = getattr(Fetcher, "PartitionRecords", None)
        if base is None:
            missing.append(f"{_WHERE['Fetcher']}.PartitionRecords")
    if base is not None:
        missing += _lacking(base, "Fetcher.PartitionRecords", _PARTITION_RECORDS_NAMES)
    return _run_check("fetch", missing, _probe_fetch, base)


def install_columnar_fetch(consumer: Any, metrics: Metrics | None = None, *, warn: bool = True) -> bool:
    """Make ``consumer.poll()`` return :class:`Records` per record batch, if :func:`check_fetch` passes.

    Otherwise (one warning) ``poll()`` keeps returning kafka-python's
    ``ConsumerRecord`` lists, which :func:`~stream.kafka.records.as_records`
    turns into the same columns. Not installed for ``read_committed``
    consumers: aborted-transaction filtering stays kafka-python's. The
    ``segstream_kafka_fast_path{path="fetch"}`` gauge of ``metrics`` says which.
    """
    if consumer.config.get("isolation_level") == "read_committed":
        _report(metrics, "fetch", False)
        return False
    base = getattr(getattr(consumer, "_fetcher", None), "PartitionRecords", None)
    check = check_fetch(base) if base is not None else Check("fetch", "missing KafkaConsumer._fetcher.PartitionRecords")
    if check.ok:
        consumer._fetcher.PartitionRecords = _partition_records_class(base)
    elif warn:  # a helper consumer (a changelog restore) stays quiet: the main consumer said it once
        _warn(check, "decoding records one at a time with kafka-python's own iterator")
    _report(metrics, "fetch", check.ok)
    return check.ok


# ----- produce -------------------------------------------------------------------

_PRODUCER_NAMES = ("_accumulator", "_transaction_manager", "_sender")
_ACCUMULATOR_NAMES = ("config", "_tp_lock", "_batches", "_incomplete", "_appends_in_progress", "_closed")
_ACCUMULATOR_CONFIG = ("message_version", "compression_attrs", "batch_size")


def run_builder(run: Run, *, timestamp_ms: int, compression_attrs: int = 0, batch_size: int = 0) -> Any:
    """A producer-side ``MemoryRecordsBuilder`` that already holds ``run`` (open: the sender closes it)."""
    builder = MemoryRecordsBuilder(2, compression_attrs, max(batch_size, BATCH_HEADER + len(run.body)))
    inner = builder._builder  # DefaultRecordBatchBuilder: header space, then the records
    inner._buffer += run.body
    inner._first_timestamp = inner._max_timestamp = int(timestamp_ms)
    inner._last_offset = run.count - 1
    inner._num_records = run.count
    builder._next_offset = run.count
    return builder


def _queue(acc: Any, tp: TopicPartition, builder: Any, run: Run) -> Any:
    """Queue ``builder`` as one batch behind whatever the accumulator holds for ``tp``, as its ``append`` does."""
    batch = ProducerBatch(tp, builder, now=time.monotonic())
    batch.max_record_size = run.max_record_size
    acc._appends_in_progress.increment()
    try:
        with acc._tp_lock(tp):
            if acc._closed:
                raise IllegalStateError("RecordAccumulator is closed")
            acc._batches[tp].append(batch)
            acc._incomplete.add(batch)
    finally:
        acc._appends_in_progress.decrement()
    return batch


def append_run(producer: Any, topic: str, partition: int, run: Run, timestamp_ms: int | None = None) -> Any:
    """Queue ``run`` as one batch of ``producer`` for ``topic``/``partition``; returns the batch's future.

    The batch goes behind anything already queued for the partition, so order
    with earlier ``send`` calls is kept. ``flush()`` waits for it like for any
    batch; :func:`run_error` reads the outcome. Only after
    :func:`use_columnar_produce` said yes for this producer.
    """
    acc = producer._accumulator
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    tp = TopicPartition(topic, partition)
    manager = producer._transaction_manager
    if manager is not None and manager.is_transactional():
        manager.maybe_add_partition_to_transaction(tp)
    builder = run_builder(run, timestamp_ms=timestamp_ms, compression_attrs=acc.config["compression_attrs"],
                          batch_size=acc.config["batch_size"])
    batch = _queue(acc, tp, builder, run)
    producer._sender.wakeup()
    return batch.produce_future


def run_error(future: Any) -> BaseException | None:
    """``None`` when the run's batch was written; else why not.

    A batch kafka-python split after ``MESSAGE_TOO_LARGE`` never completes its
    own future (its records move to new batches): after a flush, a future that
    is not done counts as failed, so the run is sent again (at least once).
    """
    if not future.is_done:
        return TimeoutError("record batch not completed (split by the producer, or not flushed)")
    if future.failed():
        return future.exception
    _, _, record_error = future.value  # FutureProduceResult: (base offset, log append time, per-record errors)
    return None if record_error is None else record_error(0)


def _probe_produce(accumulator_class: type) -> None:
    keys, values = [b"u1", None, b"k" * 200], [b"a", b"b" * 300, None]
    tp = TopicPartition("segstream-compat-probe", 0)
    for compression in (0, 1):  # none, gzip (compressed by the builder at close, as the sender does)
        (run,) = encode_runs(keys, values, batch_size=1 << 16)
        acc = accumulator_class(batch_size=1 << 16, compression_attrs=compression, message_version=2)
        batch = _queue(acc, tp, run_builder(run, timestamp_ms=_PROBE_TS, compression_attrs=compression,
                                            batch_size=1 << 16), run)
        if list(acc._batches[tp]) != [batch] or batch.record_count != run.count or not acc.has_incomplete:
            raise AssertionError("the accumulator does not hold the run as one batch")
        if batch.try_append(_PROBE_TS, b"late", b"z", [], now=time.monotonic()) is None:
            raise AssertionError("a send after the run found no room in its batch")
        batch.records.set_producer_state(7, 0, 0, False)  # what the sender does for an idempotent producer
        batch.records.close()
        (written,) = list(MemoryRecords(bytes(batch.records.buffer())))
        if written.producer_id != 7 or not written.validate_crc():  # before reading: that uncompresses in place
            raise AssertionError("a run's batch header or CRC is not what the sender would write")
        got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in written]
        want = [(i, _PROBE_TS, k, v, []) for i, (k, v) in enumerate(zip([*keys, b"late"], [*values, b"z"]))]
        if got != want:
            raise AssertionError("a run reads back differently through kafka-python's MemoryRecords")
        batch.complete(0, -1)
        if run_error(batch.produce_future) is not None:
            raise AssertionError("a completed run's batch reads as failed")
        acc.deallocate(batch)
    failed = _queue(acc, tp, run_builder(run, timestamp_ms=_PROBE_TS), run)
    acc.abort_batches(KafkaError("compat probe"))
    if not isinstance(run_error(failed.produce_future), KafkaError):
        raise AssertionError("an aborted run's batch does not read as failed")


def check_produce(producer: Any = None) -> Check:
    """Whether runs can be appended to ``producer`` (or, without one, to kafka-python's producer classes)."""
    missing = _absent("MemoryRecords", "MemoryRecordsBuilder", "ProducerBatch", "RecordAccumulator")
    accumulator_class = RecordAccumulator
    if producer is not None:
        missing += _lacking(producer, "KafkaProducer", _PRODUCER_NAMES)
        acc = getattr(producer, "_accumulator", None)
        if acc is not None:
            accumulator_class = type(acc)
            missing += _lacking(acc, "RecordAccumulator", _ACCUMULATOR_NAMES)
            config = getattr(acc, "config", {})
            missing += [f"RecordAccumulator.config[{k!r}]" for k in _ACCUMULATOR_CONFIG if k not in config]
        missing += _lacking(getattr(producer, "_sender", None), "Sender", ("wakeup",))
        manager = getattr(producer, "_transaction_manager", None)
        if manager is not None:
            missing += _lacking(manager, "TransactionManager",
                                ("is_transactional", "maybe_add_partition_to_transaction"))
    return _run_check("produce", missing, _probe_produce, accumulator_class)


def use_columnar_produce(producer: Any, metrics: Metrics | None = None) -> bool:
    """Whether :func:`append_run` may be used on ``producer``: :func:`check_produce` passes (else one
    warning) and the producer writes message format v2 (any broker since Kafka 0.11). The
    ``segstream_kafka_fast_path{path="produce"}`` gauge of ``metrics`` says which."""
    check = check_produce(producer)
    on = check.ok and producer._accumulator.config["message_version"] >= 2
    if not check.ok:
        _warn(check, "one KafkaProducer.send per record")
    _report(metrics, "produce", on)
    return on
