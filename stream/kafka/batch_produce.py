"""Columnar produce: a micro-batch's keyed records become whole Kafka record batches.

``KafkaProducer.send`` costs about 25 µs a record on the reference machine
(send and confirm of 100k segment events, py-spy): a pure-Python varint
encoder, a lock and two futures per record, then the sender thread's share.
Segment changes leave in bulk (one micro-batch, hundreds to thousands of
records, already partitioned by :mod:`stream.kafka.partitioning`), so
:func:`encode_runs` writes the records of one partition straight into the v2
record layout (one Python-level pass that only concatenates bytes) and
:func:`append_run` hands each run to the producer's accumulator as one
ready-made batch. From there on it is kafka-python's: the sender drains it,
assigns idempotent sequence numbers, compresses, computes the CRC, retries and
completes it. What the caller gets back is the batch's future:
:func:`run_error` tells whether the whole run was written.

Every record of a run carries the same create timestamp (the time of the
append) and no headers; anything else goes through ``send``.

    >>> runs = encode_runs([b"u1", b"u2", None], [b"a", None, b"ccc"], batch_size=1 << 16)
    >>> [(r.start, r.stop) for r in runs]
    [(0, 3)]
    >>> from kafka.record.memory_records import MemoryRecords
    >>> builder = run_builder(runs[0], timestamp_ms=1_700_000_000_000)
    >>> builder.close()
    >>> [(r.offset, r.key, r.value) for batch in MemoryRecords(bytes(builder.buffer())) for r in batch]
    [(0, b'u1', b'a'), (1, b'u2', None), (2, None, b'ccc')]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from kafka.errors import IllegalStateError, MessageSizeTooLargeError
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

__all__ = ["Run", "encode_runs", "run_builder", "append_run", "run_error", "supports_runs"]

_BATCH_HEADER = 61  # bytes of a v2 batch header
_TABLE_SIZE = 1 << 14


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT = [_zigzag_varint(n) for n in range(_TABLE_SIZE)]  # non-negative n -> its zigzag varint
_NULL = _zigzag_varint(-1)


def _varint(n: int) -> bytes:
    return _VARINT[n] if n < _TABLE_SIZE else _zigzag_varint(n)


def _varint_sizes(n: np.ndarray) -> np.ndarray:
    """Bytes of the zigzag varint of each non-negative ``n`` (``-1``, for null, takes one)."""
    z = np.where(n < 0, 1, n.astype(np.int64) << 1)
    size = np.ones(len(n), dtype=np.int64)
    for bits in (7, 14, 21, 28, 35, 42, 49, 56, 63):
        size += z >= (1 << bits)
    return size


class Run(NamedTuple):
    """Records ``start:stop`` of the input, encoded as the body of one v2 record batch."""

    start: int
    stop: int
    body: bytes
    max_record_size: int

    @property
    def count(self) -> int:
        return self.stop - self.start


def encode_runs(keys: Sequence[bytes | None], values: Sequence[bytes | None], *, batch_size: int,
                max_request_size: int | None = None) -> list[Run]:
    """Encode records (all bound for one partition) as few runs as ``batch_size`` allows.

    A run is at most ``batch_size`` bytes with its batch header, like the
    producer's own batches, except that a record larger than that gets a run of
    its own. A record over ``max_request_size`` raises ``MessageSizeTooLargeError``
    before anything is encoded, as ``send`` would.
    """
    n = len(keys)
    if n != len(values):
        raise ValueError(f"{n} keys but {len(values)} values")
    if n == 0:
        return []
    klen = np.fromiter((-1 if k is None else len(k) for k in keys), dtype=np.int64, count=n)
    vlen = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=n)
    # attributes, timestamp delta (0) and header count (0) take a byte each; the offset delta at most 3 here
    body = 3 + _varint_sizes(klen) + np.maximum(klen, 0) + _varint_sizes(vlen) + np.maximum(vlen, 0)
    bound = body + 3 + _varint_sizes(body + 3)  # with offset delta and length prefix, an upper bound
    if max_request_size is not None and int(bound.max()) + _BATCH_HEADER > max_request_size:
        big = int(np.argmax(bound))
        raise MessageSizeTooLargeError(f"record {big} is about {int(bound[big])} bytes, over max_request_size "
                                       f"{max_request_size}")
    room = max(1, batch_size - _BATCH_HEADER)
    runs = []
    start = 0
    cum = np.cumsum(bound)
    while start < n:
        before = int(cum[start - 1]) if start else 0
        stop = int(np.searchsorted(cum, before + room, side="right"))
        stop = min(n, max(stop, start + 1), start + (1 << 21) - 1)  # offset deltas stay within 3 varint bytes
        runs.append(_encode(keys, values, start, stop, body))
        start = stop
    return runs


def _encode(keys, values, start: int, stop: int, body: np.ndarray) -> Run:
    parts: list[bytes] = []
    add = parts.extend
    varint, null = _varint, _NULL
    sizes = body[start:stop].tolist()
    largest = 0
    for delta, (key, value, size) in enumerate(zip(keys[start:stop], values[start:stop], sizes)):
        offset_delta = varint(delta)
        size += len(offset_delta)
        largest = max(largest, size)
        add((varint(size), b"\x00\x00", offset_delta,
             null if key is None else varint(len(key)), key or b"",
             null if value is None else varint(len(value)), value or b"", b"\x00"))
    return Run(start, stop, b"".join(parts), largest)


def run_builder(run: Run, *, timestamp_ms: int, compression_attrs: int = 0, batch_size: int = 0) -> MemoryRecordsBuilder:
    """A producer-side batch builder that already holds ``run`` (open: the sender closes it)."""
    builder = MemoryRecordsBuilder(2, compression_attrs, max(batch_size, _BATCH_HEADER + len(run.body)))
    inner = builder._builder  # DefaultRecordBatchBuilder: header space, then the records
    inner._buffer += run.body
    inner._first_timestamp = inner._max_timestamp = int(timestamp_ms)
    inner._last_offset = run.count - 1
    inner._num_records = run.count
    builder._next_offset = run.count
    return builder


def supports_runs(producer: Any) -> bool:
    """Whether ``producer`` writes v2 record batches (any broker since Kafka 0.11)."""
    return producer._accumulator.config["message_version"] >= 2


def append_run(producer: Any, topic: str, partition: int, run: Run, timestamp_ms: int | None = None) -> Any:
    """Queue ``run`` as one batch of ``producer`` for ``topic``/``partition``; returns the batch's future.

    The batch goes behind anything already queued for the partition, so order
    with earlier ``send`` calls is kept. ``flush()`` waits for it like for any
    batch; :func:`run_error` reads the outcome.
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
    now = time.monotonic()
    batch = ProducerBatch(tp, builder, now=now)
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
    _, _, record_error = future.value
    return None if record_error is None else record_error(0)
