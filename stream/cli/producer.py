"""Write a recorded log into a topic (``segstream produce``), optionally at a steady rate."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from stream.kafka.clients import make_producer
from stream.settings import Settings
from eventlogs.recorded import read_record_values

__all__ = ["produce_log"]


def produce_log(settings: Settings, log_path: str | os.PathLike[str], topic: str | None = None, *,
                rate: float | None = None, limit: int | None = None,
                progress: Callable[[str], None] | None = None) -> int:
    """Send every event of the log (key = user id); returns how many were acknowledged."""
    topic = topic or settings.input_topic
    producer = make_producer(settings, linger_ms=20)
    failures: list[BaseException] = []
    sent = 0
    start = time.monotonic()
    try:
        for key, value in read_record_values(log_path):
            if limit is not None and sent >= limit:
                break
            producer.send(topic, key=key, value=value).add_errback(failures.append)
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0.002:
                    time.sleep(ahead)
            if progress and sent % 100_000 == 0:
                progress(f"produced {sent:,} events")
        producer.flush()
    finally:
        producer.close(timeout=30)
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} sends failed: {failures[0]}")
    return sent
