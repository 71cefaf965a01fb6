"""Partition ownership as kafka-python's rebalance callbacks report it, queued for the run loop.

The callbacks run on the client's IO thread, where a blocking call (a commit) raises, so
:class:`RebalanceTracker` only records what happened; :class:`~stream.runtime.runner.StreamRunner`
drains the queue right after the poll that ran the callbacks, before any record is processed.

    >>> from stream.kafka import TopicPartition
    >>> t = RebalanceTracker()
    >>> t.on_partitions_assigned([TopicPartition("events", 0), TopicPartition("events", 1)])
    >>> t.on_partitions_revoked([TopicPartition("events", 1)])
    >>> sorted(tp.partition for tp in t.owned()), [kind for kind, _ in t.drain()], t.drain()
    ([0], ['assigned', 'revoked'], [])
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from stream.kafka.consumer import RebalanceListener, TopicPartition

__all__ = ["RebalanceTracker"]

log = logging.getLogger(__name__)


class RebalanceTracker(RebalanceListener):
    """Queues assignment changes without blocking the client's IO thread."""

    def __init__(self, context: Callable[[TopicPartition], dict] | None = None) -> None:
        self._lock = threading.Lock()
        self.assigned: set[TopicPartition] = set()
        self.generations = 0
        self._events: list[tuple[str, set[TopicPartition]]] = []
        # per-partition log fields (partition, offset, generation) for warnings, given by the run loop
        self.context = context or (lambda tp: {"topic": tp.topic, "partition": tp.partition})

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned -= set(revoked)
            self._events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned |= set(assigned)
            self.generations += 1
            self._events.append(("assigned", set(assigned)))

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        with self._lock:
            self.assigned -= set(lost)
            self._events.append(("lost", set(lost)))
        for tp in sorted(lost):
            log.warning("partition lost (not committing it)", extra=self.context(tp))

    def owned(self) -> set[TopicPartition]:
        with self._lock:
            return set(self.assigned)

    def pending(self) -> bool:
        """Whether assignment changes wait to be drained by the run loop."""
        with self._lock:
            return bool(self._events)

    def drain(self) -> list[tuple[str, set[TopicPartition]]]:
        with self._lock:
            out, self._events = self._events, []
        return out
