"""The consumer end to end on every Kafka path: kafka-python with columnar fetch and produce, kafka-python's
public API when the start-up check of its internals fails (forced here), and confluent-kafka (librdkafka),
with the same outputs and commits."""

from __future__ import annotations

import logging
import threading

import msgpack
import pytest

from helpers import committed, produce, read_topic
from stream.kafka.compat import FORCE_FALLBACK_ENV


@pytest.mark.integration
@pytest.mark.parametrize("path", ["columnar", "fallback", "confluent"])
def test_the_consumer_runs_on_either_kafka_path(broker, topics, monkeypatch, caplog, path):
    from stream.runtime.app import run_consumer

    if path == "confluent":
        pytest.importorskip("confluent_kafka")

    if path == "fallback":
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "fetch,produce")
    else:
        monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    broker.create(topics, partitions=2)
    users, n = 120, 2400
    events = [msgpack.packb({"user_id": f"u{i % users}", "action": "view", "ts": 1.7e9 + i, "item_id": f"i{i % 30}",
                             "categories": [f"c{i % users % 4}"]}) for i in range(n)]
    sent = produce(broker.bootstrap, topics["input"], events, keys=[b"u%d" % (i % users) for i in range(n)])
    assert sent == n
    settings = broker.settings(topics, warmup_users=40, batch_max_events=300, segments=3, decode_process=False,
                              kafka_client="confluent" if path == "confluent" else "kafka-python")
    assert settings.columnar_fetch and settings.columnar_produce  # the user's switch is on: only the check decides
    seen: dict[str, float | None] = {}

    def on_ready(runner) -> None:
        for p in ("fetch", "produce"):
            seen[p] = runner.metrics.registry.get_sample_value("segstream_kafka_fast_path", {"path": p})

    with caplog.at_level(logging.WARNING, logger="stream.kafka.compat"):
        summary = run_consumer(settings, stop=threading.Event(), max_events=n, idle_exit_s=10, on_ready=on_ready)
    fast = 1.0 if path == "columnar" else 0.0  # librdkafka has no columnar path of its own
    assert seen == {"fetch": fast, "produce": fast}
    warnings = [r.getMessage() for r in caplog.records if r.name == "stream.kafka.compat"]
    assert len(warnings) == (2 if path == "fallback" else 0)
    assert all(FORCE_FALLBACK_ENV in w for w in warnings)
    assert summary.events == n and summary.invalid == 0
    out = read_topic(broker.bootstrap, topics["output"], expected=summary.changes)
    assert len(out) == summary.changes and {r.key for r in out} == {b"u%d" % i for i in range(users)}
    records = read_topic(broker.bootstrap, topics["input"], expected=n)
    ends = {p: sum(1 for r in records if r.partition == p) for p in range(2)}  # every offset, consumed and committed
    assert committed(broker.bootstrap, topics["group"], topics["input"], 2) == ends
