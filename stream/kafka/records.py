"""Kafka records as columns, decoded a whole record batch at a time.

kafka-python turns every fetched record into a ``ConsumerRecord`` with a
pure-Python varint decoder: about 9 µs a record on the reference machine, the
largest single cost of ``segstream run`` (py-spy: 29% of the loop) and the
whole of kafka-python's own consume ceiling. :class:`Records` holds a run of
records as columns instead (offsets, timestamps and partitions as numpy arrays,
keys and values as lists of ``bytes``), and :func:`decode_batch` fills one from
a v2 record batch with numpy over all its records: only the walk over record
lengths is a Python loop.

:func:`decode_batch` reads the wire format only (the batch's bytes, header
included); plugging it into a ``KafkaConsumer``'s fetcher takes kafka-python
internals, so that lives in :mod:`stream.kafka.compat`
(:func:`~stream.kafka.compat.install_columnar_fetch`), which checks them at
start-up and otherwise leaves ``poll()`` returning kafka-python's own
``ConsumerRecord`` lists: :func:`as_records` turns either into columns. The
decoder is checked against kafka-python's iterator on random batches
(``tests/stream/kafka/test_records.py``).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from kafka import codec
from kafka.errors import CorruptRecordError
from kafka.structs import TopicPartition

__all__ = ["Records", "RecordView", "decode_batch", "as_records", "pieces"]

# the v2 record batch header (KIP-98): 61 bytes before the records
_HEADER = 61
_MAGIC = 16
_BASE_OFFSET = struct.Struct(">q")  # at 0
_ATTRIBUTES = struct.Struct(">h")  # at 21
_TIMESTAMPS = struct.Struct(">qq")  # first and max timestamp, at 27
_COUNT = struct.Struct(">i")  # records, at 57
_COMPRESSION = 0x07
_LOG_APPEND_TIME = 0x08
_CODECS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}


class RecordView(NamedTuple):
    """One record of a :class:`Records` (what the dead-letter path needs)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(slots=True, eq=False)
class Records:
    """Consecutive records of one topic as columns, in fetch order.

    ``partitions``/``offsets`` (int64) and ``timestamps`` (int64 ms) are arrays;
    ``keys``/``values`` lists of ``bytes`` or ``None``. ``headers`` is ``None``
    when no record has any, else a list with one list per record.

    >>> r = Records.single("t", 0, np.array([5, 6]), np.array([1000, 2000]), [b"a", None], [b"x", b"y"])
    >>> len(r), r[1].offset, r[1].value
    (2, 6, b'y')
    >>> both = Records.concat([r, Records.single("t", 1, np.array([9]), np.array([3000]), [None], [b"z"])])
    >>> both.partitions.tolist(), both[-1].offset
    ([0, 0, 1], 9)
    """

    topic: str
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[list[tuple[str, bytes | None]]] | None = None

    @classmethod
    def single(cls, topic: str, partition: int, offsets: np.ndarray, timestamps: np.ndarray,
               keys: list[bytes | None], values: list[bytes | None],
               headers: list[list[tuple[str, bytes | None]]] | None = None) -> Records:
        parts = np.full(len(offsets), partition, dtype=np.int64)
        return cls(topic, parts, offsets.astype(np.int64, copy=False), timestamps.astype(np.int64, copy=False),
                   keys, values, headers)

    @classmethod
    def empty(cls, topic: str = "") -> Records:
        z = np.zeros(0, dtype=np.int64)
        return cls(topic, z, z, z, [], [])

    @classmethod
    def concat(cls, parts: Sequence[Records]) -> Records:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        topics = {p.topic for p in parts}
        if len(topics) != 1:
            raise ValueError(f"records of several topics cannot share columns: {sorted(topics)}")
        headers = None
        if any(p.headers is not None for p in parts):
            headers = list(itertools.chain.from_iterable(p.headers or [[]] * len(p) for p in parts))
        return cls(parts[0].topic, np.concatenate([p.partitions for p in parts]),
                   np.concatenate([p.offsets for p in parts]), np.concatenate([p.timestamps for p in parts]),
                   list(itertools.chain.from_iterable(p.keys for p in parts)),
                   list(itertools.chain.from_iterable(p.values for p in parts)), headers)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def offset(self) -> int:
        """Offset of the first record."""
        return int(self.offsets[0])

    def __getitem__(self, i: int) -> RecordView:
        return RecordView(self.topic, int(self.partitions[i]), int(self.offsets[i]), int(self.timestamps[i]),
                          self.keys[i], self.values[i], self.headers[i] if self.headers is not None else [])

    def select(self, index: slice | np.ndarray) -> Records:
        """The records at ``index`` (a slice, a boolean mask or positions), order kept."""
        if isinstance(index, slice):
            keys, values = self.keys[index], self.values[index]
            headers = self.headers[index] if self.headers is not None else None
        else:
            pos = np.flatnonzero(index) if index.dtype == bool else index
            ix = pos.tolist()
            keys, values = [self.keys[i] for i in ix], [self.values[i] for i in ix]
            headers = [self.headers[i] for i in ix] if self.headers is not None else None
        return Records(self.topic, self.partitions[index], self.offsets[index], self.timestamps[index],
                       keys, values, headers)

    def value_bytes(self) -> int:
        return sum(map(len, filter(None, self.values)))

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after its last record here."""
        out: dict[TopicPartition, int] = {}
        if not len(self):
            return out
        parts = self.partitions
        for p in np.unique(parts).tolist():
            out[TopicPartition(self.topic, p)] = int(self.offsets[parts == p].max()) + 1
        return out


def as_records(tp: TopicPartition, fetched: Iterable[Any]) -> Records:
    """Columns of what ``poll()`` returned for one partition: :class:`Records` or ConsumerRecords."""
    blocks: list[Records] = []
    loose: list[Any] = []
    for item in fetched:
        if isinstance(item, Records):
            if loose:
                blocks.append(_from_consumer_records(tp, loose))
                loose = []
            blocks.append(item)
        else:
            loose.append(item)
    if loose:
        blocks.append(_from_consumer_records(tp, loose))
    out = Records.concat(blocks)
    return out if len(out) else Records.empty(tp.topic)


def _from_consumer_records(tp: TopicPartition, recs: Sequence[Any]) -> Records:
    headers = [list(r.headers or []) for r in recs]
    return Records.single(tp.topic, tp.partition, np.array([r.offset for r in recs], dtype=np.int64),
                          np.array([r.timestamp for r in recs], dtype=np.int64), [r.key for r in recs],
                          [r.value for r in recs], headers if any(headers) else None)


# ----- decoding a v2 record batch ------------------------------------------------

def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zig-zag varints starting at every ``pos`` (``buf`` padded with 10 zero bytes): values and next positions."""
    b = buf[pos].astype(np.int64)
    raw = b & 0x7F
    nxt = pos + 1
    cont = np.flatnonzero(b >= 0x80)
    shift = 7
    while len(cont):
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes in a record batch")
        b = buf[nxt[cont]].astype(np.int64)
        raw[cont] |= (b & 0x7F) << shift
        nxt[cont] += 1
        cont = cont[b >= 0x80]
        shift += 7
    return (raw >> 1) ^ -(raw & 1), nxt


def _varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    raw, shift = 0, 0
    while True:
        b = buf[pos]
        raw |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes in a record batch")


def _headers(payload: bytes, pos: int, count: int) -> tuple[list[tuple[str, bytes | None]], int]:
    out = []
    for _ in range(count):
        klen, pos = _varint(payload, pos)
        if klen < 0:
            raise CorruptRecordError(f"negative header key size {klen}")
        key = payload[pos:pos + klen].decode("utf-8")
        pos += klen
        vlen, pos = _varint(payload, pos)
        value = None
        if vlen >= 0:
            value, pos = payload[pos:pos + vlen], pos + vlen
        out.append((key, value))
    return out, pos


def _varint_len(x: np.ndarray) -> np.ndarray:
    """Bytes of the unsigned varint of each (non-negative) value."""
    return 1 + sum((x >= (1 << (7 * k))).astype(np.int64) for k in range(1, 9))


def _uniform_sizes(payload: bytes, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, lengths) of the records when they differ only in their offset delta (``i`` for record ``i``:
    keys, values, timestamps and headers of one size each, as in a changelog's user rows under fixed-width
    ids, pseudonyms for one), checked against every record's length prefix; None otherwise (then the
    caller walks the prefixes one by one)."""
    if n < 2 or not payload:
        return None
    try:
        first, at = _varint(payload, 0)
    except IndexError:
        return None
    if first < 0:
        return None
    body = first + _varint_len(2 * np.arange(n, dtype=np.int64)) - 1  # record 0's offset delta takes one byte
    total = body + _varint_len(2 * body)  # each with its zig-zag length prefix
    if int(total[0]) != at + first or int(total.sum()) != len(payload):
        return None
    ends = np.cumsum(total)
    starts = ends - body
    try:
        lengths, after = _varints(np.frombuffer(payload + b"\0" * 10, dtype=np.uint8), ends - total)
    except CorruptRecordError:  # a guessed prefix fell inside some record's bytes: the sizes differ after all
        return None
    if not (np.array_equal(lengths, body) and np.array_equal(after, starts)):
        return None
    return starts, body


def pieces(payload: bytes, at: np.ndarray, length: np.ndarray) -> list[bytes | None]:
    """``payload[at:at + length]`` of each piece, None where the length is -1 (null).

    >>> pieces(b"abcdef", np.array([0, 2, 3]), np.array([2, -1, 3]))
    [b'ab', None, b'def']
    """
    if len(length) and length.min() >= 0:  # no nulls: a quarter faster without the test per record
        return [payload[a:b] for a, b in zip(at.tolist(), (at + length).tolist())]
    return [payload[a:a + n] if n >= 0 else None for a, n in zip(at.tolist(), length.tolist())]


def decode_batch(batch: bytes | bytearray, tp: TopicPartition, min_offset: int = 0) -> Records:
    """The records of one v2 record batch (its bytes, header included) at offsets ≥ ``min_offset``.

    The header is read here, not taken from kafka-python's batch object, so
    the decoder depends on the wire format only. Raises ``CorruptRecordError``
    where the batch's framing does not add up (header, record sizes, varints,
    record count), like kafka-python's own iterator. CRCs are not checked here
    (the fetcher hook checks them first when the consumer asks for it).
    """
    if len(batch) < _HEADER or batch[_MAGIC] != 2:
        raise CorruptRecordError(f"record batch of {tp}: not a message format v2 batch ({len(batch)} bytes)")
    (base_offset,) = _BASE_OFFSET.unpack_from(batch, 0)
    (attributes,) = _ATTRIBUTES.unpack_from(batch, 21)
    first_timestamp, max_timestamp = _TIMESTAMPS.unpack_from(batch, 27)
    (n,) = _COUNT.unpack_from(batch, 57)
    if n < 0:
        raise CorruptRecordError(f"record batch of {tp} at offset {base_offset}: negative record count {n}")
    payload = bytes(memoryview(batch)[_HEADER:])
    compression = attributes & _COMPRESSION
    if compression:
        decode = _CODECS.get(compression)
        if decode is None:
            raise CorruptRecordError(f"unknown compression type {compression}")
        payload = bytes(decode(payload))
    starts = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    pos, end = 0, len(payload)
    uniform = _uniform_sizes(payload, n)
    if uniform is not None:  # every record of one size (fixed-width keys and values): no walk needed
        starts, lengths = uniform
        pos = end
    try:
        for i in range(n if uniform is None else 0):  # the only per-record Python work: walk the length prefixes
            b = payload[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif payload[pos + 1] < 0x80:  # records of 64 to 8191 bytes
                z = (b & 0x7F) | (payload[pos + 1] << 7)
                length, pos = (z >> 1) ^ -(z & 1), pos + 2
            else:
                length, pos = _varint(payload, pos)
            starts[i], lengths[i] = pos, length
            pos += length
    except IndexError:
        raise CorruptRecordError(f"record batch of {tp} at offset {base_offset} ends inside a record") from None
    if pos != end or (n and lengths.min() < 0):
        raise CorruptRecordError(f"record batch of {tp} at offset {base_offset}: record sizes do not add up "
                                 f"({pos} of {end} bytes)")
    buf = np.frombuffer(payload + b"\0" * 10, dtype=np.uint8)
    ts_delta, p = _varints(buf, starts + 1)  # +1: the record's attributes byte (unused)
    offset_delta, p = _varints(buf, p)
    key_len, p = _varints(buf, p)
    key_at = p
    value_len, p = _varints(buf, p + np.maximum(key_len, 0))
    value_at = p
    header_count, p = _varints(buf, p + np.maximum(value_len, 0))
    headers: list[list[tuple[str, bytes | None]]] | None = None
    if n and (header_count.min() < 0):
        raise CorruptRecordError(f"record batch of {tp} at offset {base_offset}: negative header count")
    if n and header_count.max() > 0:
        headers = [[] for _ in range(n)]
        for i in np.flatnonzero(header_count).tolist():
            headers[i], p[i] = _headers(payload, int(p[i]), int(header_count[i]))
    if not np.array_equal(p, starts + lengths):
        raise CorruptRecordError(f"record batch of {tp} at offset {base_offset}: a record's fields do not "
                                 "fill its size")
    offsets = base_offset + offset_delta
    if attributes & _LOG_APPEND_TIME:
        timestamps = np.full(n, max_timestamp, dtype=np.int64)
    else:
        timestamps = first_timestamp + ts_delta
    keys, values = pieces(payload, key_at, key_len), pieces(payload, value_at, value_len)
    out = Records.single(tp.topic, tp.partition, offsets, timestamps, keys, values, headers)
    if n and offsets[0] < min_offset:
        out = out.select(offsets >= min_offset)
    return out
