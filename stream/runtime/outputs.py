"""Everything a processed micro-batch publishes, in one place.

Segment changes go to the output topic (contract v1), lineage and profiles to
their topics (:mod:`stream.contracts.lineage_profiles`), rejected records to the
dead-letter topic (original bytes + reason headers), erased users become
tombstones. Sends are only *started* here; :class:`~stream.kafka.clients.Publisher`
confirms them during the checkpoint. With the state changelog, ``user-segments``
records are not sent here at all: they go to the changelog's outbox
(:meth:`~stream.runtime.changelog.Changelog.hold`) and are published once the
checkpoint's marker that carries them is confirmed (``StreamRunner.checkpoint``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import numpy as np

from stream.contracts.user_segments import change_ids, dead_letter_headers, encode_user_segments
from stream.kafka.clients import Publisher
from stream.contracts.lineage_profiles import encode_lineage, encode_profiles
from stream.runtime.batch_result import BatchResult
from stream.kafka.records import Records
from stream.settings import Settings

__all__ = ["OutputWriter"]

log = logging.getLogger(__name__)


class OutputWriter:
    def __init__(self, publisher: Publisher, settings: Settings) -> None:
        self.publisher = publisher
        self.settings = settings
        #: where ``user-segments`` records go instead of the topic (keys, values, each one's input partition)
        self.outbox: Callable[[list[bytes], list[bytes | None], np.ndarray], None] | None = None

    def write(self, result: BatchResult, records: Records, emitted_at: float,
              ids: list[str] | None = None, partitions: np.ndarray | None = None) -> None:
        """Start every send the batch causes (``records`` are the batch's Kafka records, in order).

        ``ids``: the changes' ``change_id``s when there is no record to derive them from. ``partitions``:
        with an :attr:`outbox`, the input partition of each erased user then of each changed user."""
        if ids is None and len(result.changes) and len(records):
            ids = change_ids(result.changes, records.partitions, records.offsets)
        # tombstones before changes: each user's records in event order (see encode_user_segments)
        encoded = encode_user_segments(result.changes, result.erased, emitted_at, ids)
        if encoded:
            keys, values = zip(*encoded)
            if self.outbox is not None:
                assert partitions is not None and len(partitions) == len(keys)
                self.outbox(list(keys), list(values), partitions)
            else:
                self.publish(keys, values)
        send = self.publisher.send
        for key, value in encode_lineage(result.lineage):
            send(self.settings.lineage_topic, key, value)
        if result.profiles:  # each profile carries the model version it describes
            for key, value in encode_profiles(result.profiles):
                send(self.settings.profiles_topic, key, value)
        self._dead_letters(result, records)

    def publish(self, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Send ``user-segments`` records as they are (an outbox released or re-sent: same bytes, same ids)."""
        if keys:
            self.publisher.send_many(self.settings.output_topic, keys, values)

    def _dead_letters(self, result: BatchResult, records: Records) -> None:
        if not result.rejected:
            return
        for rej in result.rejected:
            rec = records[rej.index]
            key = rec.key if rec.key is not None or rec.value is not None else b""  # Kafka needs one of the two
            self.publisher.send(self.settings.dlq_topic, key, rec.value,
                                headers=dead_letter_headers(rej, rec.topic, rec.partition, rec.offset))
        first = records[result.rejected[0].index]
        reasons = collections.Counter(r.reason for r in result.rejected)
        log.warning("dead-lettered %d records (%s); first: %s", len(result.rejected),
                    ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())), result.rejected[0].detail,
                    extra={"topic": first.topic, "partition": first.partition, "offset": first.offset})
