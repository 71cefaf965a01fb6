"""Read a whole topic as an independent client: every partition, from the beginning, no group, no commits.

What a reader of a compacted topic needs (:class:`stream.client.SegmentTable`):
it must see every key, so it owns all partitions itself (manual assignment; a
consumer group would hand it only a share), and it keeps nothing on the broker
(no group, no committed offsets: it rebuilds from the beginning each time).

"The end" is where the consumer's position reaches the high-water mark the
broker reported in its fetch responses (``consumer.highwater(tp)``). Not
``end_offsets()``: the embedded broker (Tansu) answers ListOffsets wrongly for
multi-record batches (tests/stream/kafka/test_topic_reader.py reads such
batches to their end). The end a :meth:`TopicReader.read_to_end` aims at is the first
high-water mark seen per partition, so a busy topic cannot keep it reading
forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka import TopicPartition

from stream.kafka.clients import make_consumer
from stream.settings import Settings

__all__ = ["TopicReader", "TopicRecord", "TopicNotFound"]


class TopicNotFound(ValueError):
    """The topic does not exist (the reader never creates one)."""


class TopicRecord(NamedTuple):
    """One record, without kafka-python's types."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes | None]]


class TopicReader:
    """All partitions of ``topic`` from offset 0; :meth:`poll` returns what arrived, in offset order per partition.

    Not thread-safe (kafka-python's consumer is not): one thread polls.
    """

    def __init__(self, settings: Settings, topic: str, *, timeout_s: float = 30.0, consumer: Any = None,
                 client_id: str | None = None) -> None:
        self.topic = topic
        self.consumer = consumer if consumer is not None else make_consumer(
            settings, group_id=None, group_instance_id=None, enable_auto_commit=False,
            allow_auto_create_topics=False, client_id=client_id or f"{settings.client_id}-reader")
        try:
            parts = self._partitions(timeout_s)
        except BaseException:
            self.consumer.close(autocommit=False)
            raise
        self.partitions = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)

    def _partitions(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                return sorted(parts)
            if time.monotonic() >= deadline:
                raise TopicNotFound(f"topic {self.topic!r} does not exist (waited {timeout_s:.0f}s for its metadata)")
            time.sleep(0.2)

    def poll(self, timeout_s: float = 0.0, max_records: int | None = None) -> list[TopicRecord]:
        """What arrived since the last poll (waits up to ``timeout_s`` when nothing has)."""
        polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[TopicRecord] = []
        for records in polled.values():
            out.extend(TopicRecord(r.partition, r.offset, r.key, r.value, r.timestamp, list(r.headers))
                       for r in records)
        return out

    def positions(self) -> dict[int, int]:
        """Partition -> next offset to read."""
        return {tp.partition: self.consumer.position(tp) for tp in self.partitions}

    def read_to_end(self, apply: Callable[[list[TopicRecord]], None], timeout_s: float = 60.0) -> int:
        """Poll and ``apply`` records until every partition's position reaches the high-water mark first
        reported for it; returns the records read. Raises ``TimeoutError`` when the end is not reached."""
        deadline = time.monotonic() + timeout_s
        target: dict[TopicPartition, int] = {}
        n = 0
        while True:
            records = self.poll(0.2)
            if records:
                apply(records)
                n += len(records)
            for tp in self.partitions:
                if tp not in target:
                    hw = self.consumer.highwater(tp)
                    if hw is not None:
                        target[tp] = hw
            if len(target) == len(self.partitions) and all(
                    self.consumer.position(tp) >= end for tp, end in target.items()):
                return n
            if time.monotonic() >= deadline:
                behind = {tp.partition: (self.consumer.position(tp), target.get(tp)) for tp in self.partitions}
                raise TimeoutError(f"topic {self.topic!r} not read to its end within {timeout_s:.0f}s after "
                                   f"{n} records (partition: (position, end)): {behind}")

    def close(self) -> None:
        self.consumer.close(autocommit=False)
