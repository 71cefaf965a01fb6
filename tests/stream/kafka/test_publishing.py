"""Segment events are keyed by user and land where Kafka's default partitioner puts that key."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from helpers import produce, read_topic
from stream.kafka.clients import Publisher, make_producer, make_stream_producer
from stream.kafka.compat import FORCE_FALLBACK_ENV
from stream.kafka.partitioning import murmur2_many, partitions_for_keys


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=70), min_size=1, max_size=60))
def test_vectorised_murmur2_matches_the_java_compatible_reference(keys):
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=40), st.integers(1, 64))
def test_partitions_match_kafka_python_default_partitioner(user_ids, n):
    keys = [u.encode() for u in user_ids]
    assert partitions_for_keys(keys, n).tolist() == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]


@pytest.mark.integration
@pytest.mark.parametrize("path", ["columnar", "fallback", "confluent"])
def test_send_many_lands_each_key_in_its_default_partition(broker, topics, monkeypatch, path):
    """Reference: the same keys sent through kafka-python's own partitioner, on a 5-partition topic; with
    runs, with one send per record (the compat check forced to fail), and through librdkafka."""
    if path == "fallback":
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "produce")
    if path == "confluent":
        pytest.importorskip("confluent_kafka")
    broker.create(topics, partitions=5)
    keys = [f"user-{i}".encode() for i in range(300)]
    values = [msgpack.packb({"i": i}) for i in range(300)]
    produce(broker.bootstrap, topics["input"], values, keys=keys)  # kafka-python picks the partitions

    if path == "confluent":
        pub = Publisher(make_stream_producer(broker.settings(topics, kafka_client="confluent")), columnar=False)
    else:
        pub = Publisher(make_producer(broker.settings(topics)))
    assert pub.columnar == (path == "columnar")
    pub.send_many(topics["output"], keys, values)
    assert pub.confirm() == 300
    pub.producer.close()

    def placement(topic):
        return {r.key: r.partition for r in read_topic(broker.bootstrap, topic, expected=300)}

    reference, ours = placement(topics["input"]), placement(topics["output"])
    assert len(ours) == 300 and len(set(ours.values())) == 5
    assert ours == reference


@pytest.mark.integration
def test_deliveries_librdkafka_reports_failed_are_sent_again_and_counted(broker, topics):
    """librdkafka's own failure path: records still queued are purged (each one's delivery report says
    _PURGE_QUEUE), and confirm sends them again, in order, and counts them.

    Not idempotent here: purged records leave a gap in the idempotent producer's sequence numbers, which
    librdkafka repairs by bumping the producer epoch (KIP-360), and Tansu answers the bumped epoch's
    produce requests with PRODUCER_FENCED for good (a Kafka broker accepts them)."""
    pytest.importorskip("confluent_kafka")
    from prometheus_client import CollectorRegistry

    from stream.kafka.confluent import ConfluentProducer
    from stream.observability.metrics import Metrics

    broker.create(topics, partitions=1)
    settings = broker.settings(topics, kafka_client="confluent")
    # nothing leaves before the purge
    producer = ConfluentProducer(settings, **{"linger.ms": 60_000, "enable.idempotence": False})
    metrics = Metrics(CollectorRegistry())
    pub = Publisher(producer, metrics, columnar=False)
    keys = [f"user-{i}".encode() for i in range(300)]
    values = [msgpack.packb({"i": i}) for i in range(300)]
    pub.send_many(topics["output"], keys, values[:150])
    pub.send(topics["output"], keys[150], values[150], headers=[("h", b"1")])
    pub.send_many(topics["output"], keys[151:], values[151:])
    producer._producer.purge(in_queue=True, in_flight=False)

    assert pub.confirm() == 300
    assert metrics.publish_failures._value.get() == 300
    producer.close()
    got = read_topic(broker.bootstrap, topics["output"], expected=300)
    assert [(r.key, r.value) for r in got] == list(zip(keys, values))
    assert dict(got[150].headers) == {"h": b"1"}
