"""Read chosen partitions of a topic from offset 0 to their end, as columns, without a group.

What a changelog restore needs: the partitions it was just assigned, every
record, fast. "The end" is the high-water mark of the first fetch responses
(``consumer.highwater``), as in :mod:`stream.kafka.topic_reader`, never
``end_offsets()`` (the embedded broker answers it wrongly for multi-record
batches). Records come back as :class:`Records` (the columnar fetch when
kafka-python's internals pass their check), one block per partition.
"""

from __future__ import annotations

import time

from kafka import TopicPartition

from stream.kafka.clients import make_consumer
from stream.kafka.compat import install_columnar_fetch
from stream.kafka.records import Records, as_records
from stream.settings import Settings

__all__ = ["read_partitions"]


def read_partitions(settings: Settings, topic: str, partitions: list[int], *, timeout_s: float = 120.0,
                    start: dict[int, int] | None = None) -> tuple[dict[int, Records], dict[int, int]]:
    """(partition -> every record from offset 0, or ``start[partition]``, to the end, partition -> that end
    offset)."""
    consumer = make_consumer(settings, group_id=None, group_instance_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False, client_id=f"{settings.client_id}-restore",
                             max_poll_records=1 << 20, fetch_max_wait_ms=10)
    try:
        if settings.columnar_fetch:
            install_columnar_fetch(consumer, warn=False)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        start = start or {}
        from_zero = [tp for tp in tps if tp.partition not in start]
        if from_zero:  # (no argument would mean every assigned partition)
            consumer.seek_to_beginning(*from_zero)
        for tp in tps:
            if tp.partition in start:
                consumer.seek(tp, start[tp.partition])
        blocks: dict[int, list[Records]] = {p: [] for p in partitions}
        target: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for tp, fetched in consumer.poll(timeout_ms=100).items():
                block = as_records(tp, fetched)
                if len(block):
                    blocks[tp.partition].append(block)
            for tp in tps:
                if tp not in target:
                    hw = consumer.highwater(tp)
                    if hw is not None:
                        target[tp] = hw
            if len(target) == len(tps) and all(consumer.position(tp) >= end for tp, end in target.items()):
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"changelog {topic!r} partitions {partitions} not read to their end in {timeout_s:.0f}s")
        out = {p: (Records.concat(b) if b else Records.empty(topic)) for p, b in blocks.items()}
        return out, {tp.partition: end for tp, end in target.items()}
    finally:
        consumer.close(autocommit=False)
