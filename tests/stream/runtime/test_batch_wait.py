"""How long the run loop lets a micro-batch fill: counted from its oldest record's Kafka timestamp
(a plain fake consumer at the Kafka boundary, the wall clock injected)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from stream.kafka.records import Records
from stream.observability.metrics import Metrics
from stream.runtime.runner import StreamRunner
from stream.settings import Settings

T = "events"
NOW_S = 1_800_000_000.0  # the injected wall clock


def _block(ages_ms: list[float]) -> Records:
    """Records of partition 0 whose Kafka timestamps lie ``ages_ms`` before NOW_S (-1: no timestamp)."""
    n = len(ages_ms)
    stamps = np.array([-1 if a == -1 else int(NOW_S * 1000 - a) for a in ages_ms], dtype=np.int64)
    return Records.single(T, 0, np.arange(n), stamps, [b"u"] * n, [b"{}"] * n)


class PollRecorder:
    """Hands out the given blocks one poll at a time (then nothing) and records each poll's timeout; the
    broker holds ``behind`` records past the position (``None``: its end not known yet)."""

    def __init__(self, blocks: list[Records], behind: int | None = None) -> None:
        self.blocks = list(blocks)
        self.timeouts: list[int] = []
        self.behind = behind
        self.handed = 0

    def highwater(self, tp: TopicPartition) -> int | None:
        return None if self.behind is None else self.handed + self.behind

    def position(self, tp: TopicPartition) -> int:
        return self.handed

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.timeouts.append(timeout_ms)
        if not self.blocks:
            return {}
        self.handed += len(self.blocks[0])
        return {TopicPartition(T, 0): [self.blocks.pop(0)]}


def _runner(consumer: object | None = None, wait_ms: int = 50) -> StreamRunner:
    consumer = consumer if consumer is not None else PollRecorder([])
    settings = Settings(input_topic=T, batch_max_wait_ms=wait_ms, batch_max_events=1000)
    runner = StreamRunner(settings, None, consumer, None, Metrics(CollectorRegistry()),  # type: ignore[arg-type]
                          clock=lambda: NOW_S)
    runner.rebalance.on_partitions_assigned([TopicPartition(T, 0)])
    runner.rebalance.drain()
    return runner


@pytest.mark.parametrize("ages_ms, left_ms", [
    ([0.0], 50.0),             # just produced: the whole wait
    ([30.0, 5.0], 20.0),       # the oldest record has waited 30 ms (while the loop was busy) of its 50
    ([80.0], 0.0),             # waited longer than the wait already: the batch closes with what is there
    ([-1], 50.0),              # no timestamp: counts as arriving now
    ([-5_000.0], 50.0),        # stamped in the future (a producer clock ahead): never a longer wait
])
def test_a_batch_waits_only_what_its_oldest_record_has_not_waited_yet(ages_ms, left_ms):
    runner = _runner()
    before = time.monotonic()
    deadline = runner._batch_deadline([(TopicPartition(T, 0), _block(ages_ms))], room=1000)
    after = time.monotonic()
    assert before + left_ms / 1000 - 1e-3 <= deadline <= after + left_ms / 1000 + 1e-3


def test_records_that_waited_out_the_batch_wait_are_not_held_for_more():
    consumer = PollRecorder([_block([120.0, 90.0]), _block([1.0])])
    runner = _runner(consumer)
    batch = runner._collect(threading.Event())
    assert len(batch) == 2  # closed on the first poll's records: the second block is the next batch's
    assert consumer.timeouts[1:] == []  # no second poll waited for more


def test_fresh_records_wait_for_the_batch_to_fill():
    consumer = PollRecorder([_block([0.0]), _block([0.0])])
    runner = _runner(consumer, wait_ms=300)
    batch = runner._collect(threading.Event())
    assert len(batch) == 2  # the second poll's records joined the batch
    assert consumer.timeouts[1] > 200  # it waited (up to) the rest of the 300 ms for them


def test_a_backlog_fills_its_batches_however_old_its_records():
    """Records the broker already holds are no reason to close a batch at once: under a backlog every
    record is old, and the batch takes what the next polls bring."""
    consumer = PollRecorder([_block([120.0, 90.0]), _block([80.0])], behind=5_000)
    runner = _runner(consumer, wait_ms=300)
    batch = runner._collect(threading.Event())
    assert len(batch) == 3  # the second poll's records joined the batch
    assert consumer.timeouts[1] > 200
