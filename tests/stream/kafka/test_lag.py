"""Lag from the broker: the probe reads committed offsets, the log end (a fetch's high-water mark, right even
where ListOffsets is not) and the age of the oldest waiting record; the monitor publishes on its own thread."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from stream.kafka import TopicPartition, commit_offsets, ensure_topics, make_consumer
from stream.kafka.lag import LagMonitor, LagProbe, PartitionLag
from stream.observability.metrics import Metrics
from stream.settings import Settings


@pytest.mark.integration
def test_probe_measures_lag_and_age_from_the_broker(broker) -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    s = Settings(bootstrap=broker.bootstrap, group_id=group, input_topic=topic)
    ensure_topics(s, {topic: 2})
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50, batch_size=1 << 16)
    old_ms = int(time.time() * 1000) - 120_000  # records stamped two minutes ago
    for i in range(1000):  # lingering: many records per batch
        producer.send(topic, value=b"x" * 20, partition=0, timestamp_ms=old_ms + i)
    for _ in range(3):
        producer.send(topic, value=b"y", partition=1)
    producer.flush()
    producer.close()
    committer = make_consumer(s)
    committer.assign([p0, p1])
    commit_offsets(committer, {p0: 400})
    probe = LagProbe(s)
    try:
        got = probe.measure([p0, p1])
        assert got[p0].records == 600
        assert 115 <= got[p0].oldest_age_s <= 180  # the record at offset 400
        assert got[p1].records == 3  # nothing committed: counted from the log start
        assert 0 <= got[p1].oldest_age_s < 60
        commit_offsets(committer, {p0: 1000, p1: 3})
        assert probe.measure([p0, p1]) == {p0: PartitionLag(0, 0.0), p1: PartitionLag(0, 0.0)}
        assert probe.measure([p1]) == {p1: PartitionLag(0, 0.0)}  # a partition gone from the member is dropped
        assert probe.measure([]) == {}
    finally:
        committer.close(autocommit=False)
        probe.close()


class FakeProbe:
    def __init__(self, rounds: list) -> None:
        self.rounds = rounds
        self.closed = False

    def measure(self, partitions):
        step = self.rounds.pop(0) if self.rounds else {}
        if isinstance(step, Exception):
            raise step
        return {tp: lag for tp, lag in step.items() if tp in partitions}

    def close(self) -> None:
        self.closed = True


def test_monitor_keeps_last_values_drops_revoked_partitions_and_survives_failures() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    owned = {a, b}
    published: list[dict] = []
    done = threading.Event()
    probe = FakeProbe([{a: PartitionLag(5, 1.0), b: PartitionLag(7, 2.0)},
                       {a: PartitionLag(9, 3.0)},  # b did not answer this round: keeps 7
                       ConnectionError("broker away"),  # a failed probe publishes nothing
                       {a: PartitionLag(0, 0.0)}])

    def publish(lags: dict) -> None:
        published.append(lags)
        if len(published) == 2:
            owned.discard(b)  # b revoked before the next probe
        if len(published) == 3:
            done.set()

    monitor = LagMonitor(Settings(lag_probe_interval_s=0.01), lambda: set(owned), publish,
                         probe_factory=lambda: probe).start()
    assert done.wait(10)
    monitor.stop()
    assert published == [{("t", 0): (5, 1.0), ("t", 1): (7, 2.0)},
                         {("t", 0): (9, 3.0), ("t", 1): (7, 2.0)},
                         {("t", 0): (0, 0.0)}]
    assert probe.closed


def test_lag_series_follow_the_owned_partitions() -> None:
    m = Metrics(CollectorRegistry())
    m.set_lag({("t", 0): (10, 4.5), ("t", 1): (3, 1.0)})
    get = m.registry.get_sample_value
    assert get("segstream_consumer_lag_records", {"topic": "t", "partition": "0"}) == 10
    assert get("segstream_oldest_unprocessed_event_age_seconds", {"topic": "t", "partition": "0"}) == 4.5
    assert get("segstream_lag_probe_timestamp_seconds") > 0
    m.set_lag({("t", 0): (0, 0.0)})
    assert get("segstream_consumer_lag_records", {"topic": "t", "partition": "1"}) is None
    assert get("segstream_oldest_unprocessed_event_age_seconds", {"topic": "t", "partition": "1"}) is None
