"""Columnar produce (stream/kafka/batch_produce.py): runs decode to exactly the records sent, and land on a broker.

The broker tests run twice: with runs appended to the producer's accumulator,
and with the compat check forced to fail, where the Publisher sends one record
at a time and must deliver exactly the same.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from helpers import read_topic
import numpy as np

from stream.kafka.batch_produce import encode_columns, encode_runs
from stream.kafka.clients import Publisher, make_producer
from stream.kafka.compat import FORCE_FALLBACK_ENV, run_builder
from stream.observability.metrics import Metrics
from stream.kafka.partitioning import partitions_for_keys

_blob = st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=100, max_size=9000).map(lambda b: b * 3))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_blob, _blob), min_size=1, max_size=80), st.integers(200, 40_000),
       st.sampled_from([0, 1]))
def test_runs_decode_to_the_records_sent_and_respect_the_batch_size(records, batch_size, compression):
    """kafka-python's own reader is the reference; gzip (1) exercises the sender-side compression of a run."""
    keys, values = [k for k, _ in records], [v for _, v in records]
    runs = encode_runs(keys, values, batch_size=batch_size)
    assert [r.start for r in runs] == [0] + [r.stop for r in runs[:-1]] and runs[-1].stop == len(records)
    decoded = []
    for run in runs:
        builder = run_builder(run, timestamp_ms=1_700_000_000_123, compression_attrs=compression, batch_size=batch_size)
        builder.close()
        (batch,) = list(MemoryRecords(bytes(builder.buffer())))
        got = list(batch)
        assert [r.offset for r in got] == list(range(run.count))
        assert all(r.timestamp == 1_700_000_000_123 and r.headers == [] for r in got)
        decoded += [(r.key, r.value) for r in got]
        if run.count > 1:  # a lone oversized record may exceed the batch size, nothing else
            assert 61 + len(run.body) <= batch_size
    assert decoded == records


def test_a_record_over_the_request_limit_is_refused_before_anything_is_sent():
    with pytest.raises(MessageSizeTooLargeError):
        encode_runs([b"k", b"k"], [b"v", b"x" * 5000], batch_size=1 << 16, max_request_size=4096)


@pytest.fixture(params=["columnar", "fallback"])
def produce_path(request, monkeypatch) -> str:
    """``fallback``: the compat check is forced to fail, as a changed kafka-python would make it."""
    if request.param == "fallback":
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "produce")
    return request.param


def _publisher(producer, path: str, caplog, metrics: Metrics | None = None) -> Publisher:
    """A Publisher, checked to use the path asked for: the gauge, and one warning exactly when it falls back."""
    metrics = metrics or Metrics(CollectorRegistry())
    with caplog.at_level("WARNING", logger="stream.kafka.compat"):
        pub = Publisher(producer, metrics)
    warnings = [r.getMessage() for r in caplog.records if r.name == "stream.kafka.compat"]
    assert pub.columnar == (path == "columnar")
    assert metrics.registry.get_sample_value("segstream_kafka_fast_path", {"path": "produce"}) == pub.columnar
    assert len(warnings) == (path == "fallback") and all(FORCE_FALLBACK_ENV in w for w in warnings)
    return pub


def _sent(n: int) -> tuple[list[bytes], list[bytes | None]]:
    keys = [f"user-{i % 97}".encode() for i in range(n)]
    values = [None if i % 50 == 7 else msgpack.packb({"i": i, "pad": "x" * (i % 300)}) for i in range(n)]
    return keys, values


@pytest.mark.integration
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_runs_land_in_the_default_partition_in_order_mixed_with_single_sends(broker, topics, compression,
                                                                             produce_path, caplog):
    """Small batches force several runs per partition; single sends in between keep their place."""
    broker.create(topics, partitions=3)
    producer = make_producer(broker.settings(topics), batch_size=2048, compression_type=compression)
    pub = _publisher(producer, produce_path, caplog)
    keys, values = _sent(1200)
    out = topics["output"]
    pub.send_many(out, keys[:600], values[:600])
    pub.send(out, b"single", b"between")
    pub.send_many(out, keys[600:], values[600:])
    assert len(pub) == 1201
    assert pub.confirm() == 1201
    producer.close()

    got = read_topic(broker.bootstrap, out, expected=1201)
    assert len(got) == 1201
    expected_part = partitions_for_keys(keys, 3).tolist()
    for part in range(3):
        mine = [(r.key, r.value) for r in sorted(got, key=lambda r: r.offset) if r.partition == part]
        want = [(k, v) for k, v, p in zip(keys, values, expected_part) if p == part]
        if part == partitions_for_keys([b"single"], 3)[0]:
            cut = sum(1 for p in expected_part[:600] if p == part)
            want.insert(cut, (b"single", b"between"))
        assert mine == want


@pytest.mark.integration
def test_a_failed_run_is_sent_again_and_counted(broker, topics, produce_path, caplog):
    """A run whose batch fails (aborted here before the sender takes it) is re-sent by confirm, once;
    in the fallback, so is each record of the failed batches."""
    broker.create(topics, partitions=1)
    producer = make_producer(broker.settings(topics), linger_ms=60_000)  # nothing leaves before the abort
    metrics = Metrics(CollectorRegistry())
    pub = _publisher(producer, produce_path, caplog, metrics)
    keys, values = _sent(300)
    out = topics["output"]
    pub.send_many(out, keys, values)
    acc = producer._accumulator
    tp = TopicPartition(out, 0)
    with acc._tp_lock(tp):
        batches = list(acc._batches[tp])
        acc._batches[tp].clear()
    assert len(batches) == 1 or produce_path == "fallback"
    for batch in batches:
        acc.deallocate(batch)
        batch.abort(KafkaError("injected failure"))

    assert pub.confirm() == 300
    assert metrics.publish_failures._value.get() == 300
    producer.close()
    got = read_topic(broker.bootstrap, out, expected=300)
    assert [(r.key, r.value) for r in got] == list(zip(keys, values))


_KEYS = st.lists(st.binary(max_size=20), min_size=1, max_size=400)


@settings(max_examples=60, deadline=None)
@given(keys=_KEYS, width=st.sampled_from([None, 0, 7, 300]), mixed=st.lists(st.one_of(st.none(), st.binary(max_size=50)), max_size=400),
       batch_size=st.sampled_from([200, 4096, 1 << 18]))
def test_encode_columns_writes_the_very_bytes_of_encode_runs(keys, width, mixed, batch_size):
    """The columnar encoder (one value width, or mixed widths and nulls) equals the per-record one."""
    n = len(keys)
    if width is None:
        values = [mixed[i] if i < len(mixed) else None for i in range(n)]
    else:
        values = [bytes([i % 251]) * width for i in range(n)]
    want = encode_runs(keys, values, batch_size=batch_size)
    got = encode_columns(b"".join(keys), np.array([len(k) for k in keys]), b"".join(v or b"" for v in values),
                         np.array([-1 if v is None else len(v) for v in values]), batch_size=batch_size)
    assert [(r.start, r.stop, r.max_record_size, r.body) for r in got] == \
        [(r.start, r.stop, r.max_record_size, r.body) for r in want]
