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


def test_default_handler_writes_to_stderr_as_it_is_when_the_record_is_logged(monkeypatch) -> None:
    """A harness that swaps and closes sys.stderr after start-up (pytest's capture does) must not leave
    a handler pointing at the closed stream: later records go to the stderr of their time."""
    first, later = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logger = configure_logging("text", "INFO", name="segstream.test.stderr")
    try:
        logger.warning("before the swap")
        first.close()
        monkeypatch.setattr("sys.stderr", later)
        logger.warning("after the swap")
    finally:
        logger.handlers[:] = []
        logger.propagate = True
    lines = later.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING segstream.test.stderr: after the swap"), lines
