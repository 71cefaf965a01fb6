"""The columnar batch decoder agrees with kafka-python's record iterator, and the fetcher hook keeps positions.

The broker tests run twice: with the columnar fetch hook, and with the compat
check forced to fail, where ``poll()`` returns kafka-python's own records and
:func:`as_records` must give the same columns.
"""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from helpers import produce, read_topic
from stream.kafka.compat import FORCE_FALLBACK_ENV, install_columnar_fetch
from stream.kafka.records import Records, as_records, decode_batch

TP = TopicPartition("t", 3)

record = st.tuples(
    st.one_of(st.none(), st.binary(max_size=300)),  # key (lengths past 63 need two-byte varints)
    st.one_of(st.none(), st.binary(max_size=300)),  # value
    st.integers(0, 10**7),  # timestamp delta, ms
    st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20))), max_size=2),
)


def _batch_bytes(recs, *, compression=0, base_offset=0, first_ts=1_700_000_000_000, log_append_time=False) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, (key, value, dt, headers) in enumerate(recs):
        b.append(i, timestamp=first_ts + dt, key=key, value=value, headers=headers)
    raw = bytearray(b.build())
    struct.pack_into(">q", raw, 0, base_offset)  # not covered by the CRC
    if log_append_time:
        raw[22] |= 0x08  # attributes (low byte); neither decoder checks the CRC
    return bytes(raw)


def _batch(raw: bytes):
    return MemoryRecords(raw).next_batch()


def test_a_buffer_that_is_not_a_v2_batch_is_rejected():
    raw = bytearray(_batch_bytes([(b"k", b"v", 0, [])]))
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(raw[:60]), TP)
    raw[16] = 1  # magic
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(raw), TP)


def test_a_batch_whose_sizes_only_add_up_like_uniform_records_decodes_like_kafka_pythons():
    """Six records whose total size matches six equal records: the uniform-size probe reads a "length
    prefix" inside a header key made of continuation bytes (\\x80...), which must send it back to the walk,
    not reject a valid batch (found by the property test below)."""
    recs = [(None, b"\0" * 3, 8193, [("0", None), ("0\x80\x80\x80\u0800", None)]),
            (None, None, 0, [("", None), ("0000\x80\x80\x80", None)]),
            (b"\0" * 4, b"\0" * 20, 0, []),
            (None, b"\0" * 5, 0, [("\x80", None)]),
            (None, None, 0, [("00\U00010000", None), ("00\x80\x80" + "\U00010000" * 4, None)]),
            (None, b"\0", 0, [])]
    raw = _batch_bytes(recs)
    expected = list(_batch(raw))
    got = decode_batch(raw, TP)
    assert got.values == [r.value for r in expected] and got.keys == [r.key for r in expected]
    assert [got[i].headers for i in range(len(got))] == [list(r.headers) for r in expected]


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=40), st.sampled_from([0, 1]), st.integers(0, 2**40),
       st.booleans(), st.data())
def test_decoded_columns_equal_kafka_pythons_records(recs, compression, base, log_append, data):
    raw = _batch_bytes(recs, compression=compression, base_offset=base, log_append_time=log_append)
    expected = list(_batch(raw))
    skip = data.draw(st.integers(0, len(recs)))
    got = decode_batch(raw, TP, min_offset=base + skip)
    expected = expected[skip:]
    assert got.offsets.tolist() == [r.offset for r in expected]
    assert got.timestamps.tolist() == [r.timestamp for r in expected]
    assert got.keys == [r.key for r in expected]
    assert got.values == [r.value for r in expected]
    assert [got[i].headers for i in range(len(got))] == [list(r.headers) for r in expected]
    assert set(got.partitions.tolist()) <= {3}


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 300), st.integers(0, 40), st.integers(0, 400), st.booleans(), st.integers(0, 99))
def test_records_of_one_size_decode_like_kafka_pythons(n, key_len, value_len, bend, seed):
    """Records differing only in their offset delta (a changelog's user rows) take the decoder's no-walk path;
    ``bend`` makes one value longer, which must be noticed."""
    rng = np.random.default_rng(seed)
    recs = [(rng.bytes(key_len), rng.bytes(value_len), 0, []) for _ in range(n)]
    if bend:
        k, v, dt, h = recs[n // 2]
        recs[n // 2] = (k, v + b"x", dt, h)
    raw = _batch_bytes(recs)
    expected = list(_batch(raw))
    got = decode_batch(raw, TP)
    assert got.keys == [r.key for r in expected] and got.values == [r.value for r in expected]
    assert got.offsets.tolist() == [r.offset for r in expected]


def test_a_batch_whose_records_do_not_add_up_is_rejected():
    raw = bytearray(_batch_bytes([(b"k", b"v" * 10, 0, [])] * 3))
    struct.pack_into(">i", raw, 57, 4)  # claims 4 records, holds 3
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(raw), TP)
    raw = bytearray(_batch_bytes([(b"k", b"v" * 10, 0, [])] * 3))
    raw[61] += 2  # the first record claims one byte more than it has
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(raw), TP)


def test_select_and_concat_keep_columns_aligned():
    a = Records.single("t", 0, np.arange(5), np.arange(5) * 10, [None] * 5, [bytes([i]) for i in range(5)])
    b = Records.single("t", 2, np.arange(100, 103), np.zeros(3), [b"k"] * 3, [b"x", None, b"z"],
                       [[("h", b"1")], [], []])
    both = Records.concat([a.select(slice(1, 3)), b.select(np.array([True, False, True]))])
    assert both.partitions.tolist() == [0, 0, 2, 2]
    assert both.offsets.tolist() == [1, 2, 100, 102]
    assert both.values == [b"\x01", b"\x02", b"x", b"z"]
    assert [both[i].headers for i in range(4)] == [[], [], [("h", b"1")], []]
    assert both.next_offsets() == {TopicPartition("t", 0): 3, TopicPartition("t", 2): 103}
    assert both.value_bytes() == 4


@pytest.fixture(params=["columnar", "fallback"])
def fetch_path(request, monkeypatch, caplog) -> str:
    """``fallback``: the compat check is forced to fail, as a changed kafka-python would make it."""
    if request.param == "fallback":
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "fetch")
    caplog.set_level("WARNING", logger="stream.kafka.compat")
    return request.param


def _consumer(bootstrap: str, path: str, caplog, **kw) -> KafkaConsumer:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=6000, heartbeat_interval_ms=1000, **kw)
    assert install_columnar_fetch(c) == (path == "columnar")
    warnings = [r.getMessage() for r in caplog.records if r.name == "stream.kafka.compat"]
    assert len(warnings) == (path == "fallback") and all(FORCE_FALLBACK_ENV in w for w in warnings)
    return c


def _columns(tp: TopicPartition, fetched: list, path: str) -> Records:
    """What the run loop makes of one partition's poll: the hook's blocks, or kafka-python's records."""
    assert all(isinstance(x, Records) == (path == "columnar") for x in fetched)
    return as_records(tp, fetched)


@pytest.mark.integration
def test_group_consumer_gets_every_record_once_and_positions_follow(broker, topics, fetch_path, caplog):
    """A real broker, 3 partitions, small polls that split record batches: columns equal kafka-python's records."""
    broker.create(topics, partitions=3)
    values = [f"value-{i}".encode() * (i % 7) or None for i in range(2000)]
    keys = [f"user-{i % 97}".encode() for i in range(2000)]
    produce(broker.bootstrap, topics["input"], values, keys=keys)
    reference = read_topic(broker.bootstrap, topics["input"], expected=2000)

    c = _consumer(broker.bootstrap, fetch_path, caplog, group_id=f"cols-{uuid.uuid4().hex[:6]}")
    c.subscribe([topics["input"]])
    got = []
    try:
        while len(got) < 2000:
            polled = c.poll(timeout_ms=5000, max_records=7)
            assert polled, "no records within 5s"
            n = 0
            for tp, fetched in polled.items():
                block = _columns(tp, fetched, fetch_path)
                got.extend(block[i] for i in range(len(block)))
                n += len(block)
                assert c.position(tp) == int(block.offsets[-1]) + 1  # the position follows each poll
            assert n <= 7
        assert c.poll(timeout_ms=500) == {}
        ends = {}
        for r in got:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        for p, end in ends.items():
            assert c.position(TopicPartition(topics["input"], p)) == end
    finally:
        c.close(autocommit=False)
    key = lambda r: (r.partition, r.offset)  # noqa: E731
    assert sorted((r.partition, r.offset, r.timestamp, r.key, r.value) for r in got) == \
        sorted((r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in reference)
    assert len({key(r) for r in got}) == 2000


@pytest.mark.integration
def test_seek_into_the_middle_of_a_batch(broker, topics, fetch_path, caplog):
    broker.create(topics, partitions=1)
    produce(broker.bootstrap, topics["input"], [f"{i}".encode() for i in range(50)], partition=0)
    tp = TopicPartition(topics["input"], 0)
    c = _consumer(broker.bootstrap, fetch_path, caplog)
    try:
        c.assign([tp])
        c.seek(tp, 17)
        seen: list[int] = []
        while len(seen) < 33:
            for fetched in c.poll(timeout_ms=5000).values():
                block = _columns(tp, fetched, fetch_path)
                seen.extend(block.offsets.tolist())
        assert seen == list(range(17, 50))
        assert [int(v) for v in block.values[-3:]] == [47, 48, 49]
    finally:
        c.close(autocommit=False)
