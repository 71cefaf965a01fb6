"""Columnar produce: a micro-batch's keyed records become whole Kafka record batches.

``KafkaProducer.send`` costs about 25 µs a record on the reference machine
(send and confirm of 100k segment events, py-spy): a pure-Python varint
encoder, a lock and two futures per record, then the sender thread's share.
Segment changes leave in bulk (one micro-batch, hundreds to thousands of
records, already partitioned by :mod:`stream.kafka.partitioning`), so
:func:`encode_runs` writes the records of one partition straight into the v2
record layout (one Python-level pass that only concatenates bytes).
Handing a run to the producer's accumulator as one ready-made batch takes
kafka-python internals, so that is :func:`stream.kafka.compat.append_run`,
checked at start-up. From there on it is kafka-python's: the sender drains it,
assigns idempotent sequence numbers, compresses, computes the CRC, retries and
completes it. What the caller gets back is the batch's future, read by
:func:`stream.kafka.compat.run_error`.

Every record of a run carries the same create timestamp (the time of the
append) and no headers; anything else goes through ``send``.

    >>> runs = encode_runs([b"u1", b"u2", None], [b"a", None, b"ccc"], batch_size=1 << 16)
    >>> [(r.start, r.stop, r.count) for r in runs]
    [(0, 3, 3)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from kafka.errors import MessageSizeTooLargeError

__all__ = ["Run", "encode_runs", "BATCH_HEADER"]

BATCH_HEADER = 61  # bytes of a v2 batch header
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
    if max_request_size is not None and int(bound.max()) + BATCH_HEADER > max_request_size:
        big = int(np.argmax(bound))
        raise MessageSizeTooLargeError(f"record {big} is about {int(bound[big])} bytes, over max_request_size "
                                       f"{max_request_size}")
    room = max(1, batch_size - BATCH_HEADER)
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


def _varint_matrix(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zigzag varints of non-negative ``n`` (``-1``: null) as rows of 4 bytes, and their sizes."""
    if len(n) and int(n.max()) >= 1 << 27:
        raise ValueError("a length or delta over 2**27 does not fit the 4-byte varints of encode_columns")
    z = np.where(n < 0, 1, n.astype(np.int64) << 1)
    sizes = _varint_sizes(n)
    out = np.empty((len(n), 4), dtype=np.uint8)
    for b in range(4):
        out[:, b] = ((z >> (7 * b)) & 0x7F) | ((b < sizes - 1).astype(np.int64) << 7)
    return out, sizes


def _scatter(buf: np.ndarray, at: np.ndarray, flat: bytes, lengths: np.ndarray) -> None:
    """Copy the pieces of ``flat`` (consecutive, ``lengths`` bytes each) to ``buf`` at ``at``, at once."""
    lengths = np.maximum(lengths, 0)
    total = int(lengths.sum())
    if not total:
        return
    src_start = np.cumsum(lengths) - lengths
    buf[np.repeat(at - src_start, lengths) + np.arange(total)] = np.frombuffer(flat, dtype=np.uint8)


_FEW = 8  # records below which encode_columns slices them and encodes them one by one


def encode_columns(key_bytes: bytes, key_lengths: np.ndarray, value_bytes: bytes, value_lengths: np.ndarray, *,
                   batch_size: int) -> list[Run]:
    """What :func:`encode_runs` makes, from columns: keys and values each as one buffer of consecutive
    pieces and their lengths (``-1``: null). No Python step per record: the record layout is written
    with numpy scatters, for the state changelog's thousands of fixed-width records per checkpoint."""
    klen = np.asarray(key_lengths, dtype=np.int64)
    vlen = np.asarray(value_lengths, dtype=np.int64)
    n = len(klen)
    if n == 0:
        return []
    if n <= _FEW:  # a marker or the model's core: a matrix as wide as one big value costs more than slicing
        ks, vs = np.cumsum(np.maximum(klen, 0)) - np.maximum(klen, 0), np.cumsum(np.maximum(vlen, 0)) - np.maximum(vlen, 0)
        keys = [None if kl < 0 else key_bytes[k:k + kl] for k, kl in zip(ks.tolist(), klen.tolist())]
        values = [None if vl < 0 else value_bytes[v:v + vl] for v, vl in zip(vs.tolist(), vlen.tolist())]
        return encode_runs(keys, values, batch_size=batch_size)
    kv, ks = _varint_matrix(klen)
    vv, vs = _varint_matrix(vlen)
    body = 3 + ks + np.maximum(klen, 0) + vs + np.maximum(vlen, 0)
    bound = body + 3 + _varint_sizes(body + 3)
    room = max(1, batch_size - BATCH_HEADER)
    cum = np.cumsum(bound)
    starts = []
    start = 0
    while start < n:
        before = int(cum[start - 1]) if start else 0
        stop = int(np.searchsorted(cum, before + room, side="right"))
        starts.append(start)
        start = min(n, max(stop, start + 1), start + (1 << 21) - 1)
    run_of = np.zeros(n, dtype=np.int64)
    run_of[np.array(starts[1:], dtype=np.int64)] = 1
    run_of = np.cumsum(run_of)
    delta = np.arange(n) - np.array(starts, dtype=np.int64)[run_of]
    dv, ds = _varint_matrix(delta)
    size = body + ds
    sv, ss = _varint_matrix(size)
    total = ss + size
    rec_start = np.cumsum(total) - total
    width = int(total.max())
    if (vlen == vlen[0]).all():
        # one value width: each record right-aligned in a row of a matrix, its value in the same columns
        # of every row (only the short heads and the keys are scattered), then the rows' padding dropped
        rows = np.zeros((n, width), dtype=np.uint8)  # attributes, timestamp delta, header count: 0
        flat = rows.reshape(-1)
        first = np.arange(n, dtype=np.int64) * width + (width - total)
    else:
        flat = np.zeros(int(total.sum()), dtype=np.uint8)
        first = rec_start
    at_delta = first + ss + 2
    at_klen = at_delta + ds
    at_key = at_klen + ks
    at_vlen = at_key + np.maximum(klen, 0)
    at_value = at_vlen + vs
    for at, mat, sz in ((first, sv, ss), (at_delta, dv, ds), (at_klen, kv, ks), (at_vlen, vv, vs)):
        for b in range(4):
            m = sz > b
            flat[at[m] + b] = mat[m, b]
    _scatter(flat, at_key, key_bytes, klen)
    if first is not rec_start:
        v = max(int(vlen[0]), 0)
        if v:
            rows[:, width - 1 - v:width - 1] = np.frombuffer(value_bytes, dtype=np.uint8).reshape(n, v)
        buf = rows[np.arange(width)[None, :] >= (width - total)[:, None]]
    else:
        _scatter(flat, at_value, value_bytes, vlen)
        buf = flat
    ends = starts[1:] + [n]
    bounds = np.append(rec_start, len(buf))
    return [Run(s, e, buf[bounds[s]:bounds[e]].tobytes(), int(size[s:e].max())) for s, e in zip(starts, ends)]
