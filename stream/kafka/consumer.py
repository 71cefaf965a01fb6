"""What the run loop needs of a consumer, in the seam's names: partitions, explicit commits, errors.

The run loop and the model sync hold a ``Consumer`` and call its public
methods (``poll``, ``seek``, ``position``, ``committed``, ``highwater``,
``group_metadata``); this module gives them the few kafka-python types those
calls take or raise, so that nothing outside :mod:`stream.kafka` imports
kafka-python. Offsets are committed as plain ints through
:func:`commit_offsets`: the run loop never builds kafka-python's
``OffsetAndMetadata`` itself.

    >>> class Recording:
    ...     def commit(self, offsets):
    ...         self.sent = offsets
    >>> c = Recording()
    >>> commit_offsets(c, {TopicPartition("events", 0): 42})
    >>> [(tp.partition, om.offset, om.metadata) for tp, om in c.sent.items()]
    [(0, 42, '')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer as Consumer
from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener as RebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

__all__ = ["Consumer", "TopicPartition", "RebalanceListener", "CommitFailedError", "KafkaError", "commit_offsets"]


def commit_offsets(consumer: Any, offsets: Mapping[TopicPartition, int]) -> None:
    """Commit exactly ``offsets`` (per partition, the next offset to read), synchronously.

    Only explicit offsets are committed, never the consumer's positions: the
    positions run ahead of what the state and outputs reflect. No metadata and
    no leader epoch (-1) go with them. Raises ``CommitFailedError`` (the group
    rebalanced) or another ``KafkaError``; call it from the run loop, never from
    a rebalance callback (those run on the client's IO thread, where a
    blocking commit raises).
    """
    consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
