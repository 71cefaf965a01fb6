"""SIGTERM mid-stream finishes the batch and commits; a restart skips nothing (on either Kafka client)."""

from __future__ import annotations

import pytest

from helpers import SegstreamProcess, committed, pack_events, produce

pytestmark = pytest.mark.integration

N = 30_000


def test_sigterm_then_restart_skips_nothing(broker, topics, kafka_client):
    broker.create(topics)
    events = [{"user_id": f"u{i % 500}", "action": "view", "ts": 1.7e9 + i * 0.5, "item_id": i % 97,
               "categories": [f"c{i % 9}"]} for i in range(N)]
    produce(broker.bootstrap, topics["input"], pack_events(events))
    settings = broker.settings(topics)
    client = ("--kafka-client", kafka_client)

    # small batches and a slow-ish encoder path so that SIGTERM lands mid-stream
    first = SegstreamProcess(settings, "--batch-max-events", "200", *client)
    try:
        first.wait_metric("segstream_checkpoint_duration_seconds_count", lambda v: v >= 3, timeout_s=120)
        code, s1, err = first.terminate(timeout_s=30)
    finally:
        first.kill()
    assert code == 0, err[-3000:]
    assert s1["stopped_by"] == "signal"
    c1 = committed(broker.bootstrap, topics["group"], topics["input"])[0]
    assert c1 is not None and 0 < c1 < N, c1
    assert c1 == s1["events"]  # everything processed was committed before exit, nothing more

    second = SegstreamProcess(settings, *client)
    try:
        second.wait_metric("segstream_events_consumed_total", lambda v: v >= N - c1, timeout_s=120)
        consumed = second.metrics()["segstream_events_consumed_total"]
        code, s2, err = second.terminate()
    finally:
        second.kill()
    assert code == 0, err[-3000:]
    assert consumed == N - c1  # resumed exactly at the committed offset: nothing skipped, nothing re-read
    assert committed(broker.bootstrap, topics["group"], topics["input"])[0] == N
