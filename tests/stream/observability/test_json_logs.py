"""Warnings on the rebalance path carry topic/partition/offset/generation as JSON fields."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

from kafka import TopicPartition

from stream.observability.logs import configure_logging
from stream.kafka.rebalance import RebalanceTracker
from stream.runtime.runner import StreamRunner


class FakeConsumer:  # boundary fake: only the group metadata the log context reads
    def group_metadata(self) -> SimpleNamespace:
        return SimpleNamespace(generation_id=7)


def test_partition_lost_warning_is_structured() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf, name="stream.kafka.rebalance")
    try:
        runner = StreamRunner.__new__(StreamRunner)
        runner.consumer = FakeConsumer()
        runner._positions = {TopicPartition("events", 2): 1234}
        tracker = RebalanceTracker(runner._log_context)
        tracker.on_partitions_assigned([TopicPartition("events", 2), TopicPartition("events", 5)])
        tracker.on_partitions_lost([TopicPartition("events", 2), TopicPartition("events", 5)])
    finally:
        logging.getLogger("stream.kafka.rebalance").handlers[:] = []
        logging.getLogger("stream.kafka.rebalance").propagate = True
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    warnings = [r for r in lines if r["level"] == "WARNING"]
    assert [(r["topic"], r["partition"], r["offset"], r["generation"]) for r in warnings] == [
        ("events", 2, 1234, 7), ("events", 5, None, 7)]
    assert tracker.owned() == set()
