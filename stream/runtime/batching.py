"""How the run loop cuts micro-batches out of what the consumer fetches (a part of
:class:`~stream.runtime.runner.StreamRunner`, kept apart because it is one concept).

- **free-running** (:meth:`MicroBatches._collect`): up to ``batch_max_events`` records, or until the
  oldest record of the batch has waited ``batch_max_wait_ms`` since its Kafka timestamp;
- **aligned** (:meth:`MicroBatches._collect_aligned`): one partition's block of offsets
  ``[k*B, (k+1)*B)``, so that a replay after a crash cuts the very same batches;
- **fetched ahead** (:meth:`MicroBatches._prefetch`): with the decode process, while batches are
  full, the next batch is fetched and decoded in the child while this one is processed.

Each poll applies the rebalance it caused before any record is kept (:meth:`MicroBatches._poll`),
and drops records of partitions that rebalance reset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import numpy as np

from state.events import EventBatch, Rejected
from stream.kafka import TopicPartition
from stream.kafka.records import Records, as_records

__all__ = ["MicroBatches"]

log = logging.getLogger("stream.runtime.runner")  # the run loop's logger: one source for its records


class MicroBatches:
    """The run loop's batching; :class:`~stream.runtime.runner.StreamRunner` supplies the consumer,
    settings, clock, rebalance tracker and the checkpoint schedule it reads."""

    def _prefetch(self, records: Records) -> tuple[Records, tuple[EventBatch, list[Rejected]] | None]:
        """With a decode process: take the records already fetched as the next batch (``self._ahead``) and
        hand them to the child; returns this batch (less what a rebalance voided) and its columns, decoded
        in the child while the last batch was processed (``None``: decode in-process).

        Only under a backlog (this batch is full, or the broker holds a full batch's worth past the
        consumer's position) does it fetch ahead: decoding the next batch in the child while this one is
        processed is what lets the loop catch up. A loop that keeps up gains nothing from it and would
        pay in latency: the records fetched ahead wait for this batch, then form a small batch of their
        own with its own checkpoint.

        The poll may run rebalance callbacks, so this batch's records of reset partitions are dropped
        first (:meth:`_void`, as in :meth:`_collect`), and with them the child's columns of this batch.
        """
        assert self.decode_ahead is not None
        backlog = len(records) >= self._max_batch or self._broker_holds(self.rebalance.owned(), self._max_batch)
        ahead = Records.concat([b for _, b in self._poll(0, self._max_batch)]) if backlog else Records.empty()
        self._ahead = ahead if len(ahead) else None
        if self._reset:
            kept = self._void(records)
            if len(kept) < len(records):
                records = kept
                self.decode_ahead.discard()
        return records, self.decode_ahead.exchange(None if self._ahead is None else self._ahead.values)

    def _poll(self, timeout_ms: int, max_records: int) -> list[tuple[TopicPartition, Records]]:
        """One poll (one block of columns per partition), with any rebalance it caused applied first."""
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        reset = self._reset = self._apply_rebalance()
        owned = self.rebalance.owned()
        out = []
        for tp, fetched in polled.items():
            block = as_records(tp, fetched)
            if tp in owned and tp not in reset:
                out.append((tp, block))
            elif len(block):
                log.info("dropped %d fetched records of partition %s (revoked or restored)", len(block), tp,
                         extra={"topic": tp.topic, "partition": tp.partition})
        return out

    def _collect(self, stop: threading.Event) -> Records:
        """One micro-batch: up to ``batch_max_events`` records, or until its oldest record has waited
        ``batch_max_wait_ms`` (:meth:`_batch_deadline`)."""
        max_n = self._max_batch
        blocks: list[Records] = []
        count = 0
        deadline: float | None = None
        while not stop.is_set():
            timeout_ms = self._idle_poll_ms() if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            got = self._poll(timeout_ms, max_n - count)
            if self._reset and blocks:
                blocks = [self._void(Records.concat(blocks))]
            blocks.extend(b for _, b in got)
            count = sum(len(b) for b in blocks)
            if count and deadline is None:
                deadline = self._batch_deadline(got, max_n - count)
            if count >= max_n or (deadline is not None and time.monotonic() >= deadline):
                break
            if not count:
                break  # idle tick: let the caller check stop / idle exit
        return Records.concat(blocks)

    def _batch_deadline(self, got: list[tuple[TopicPartition, Records]], room: int) -> float:
        """When a batch whose first records came as ``got`` closes (``time.monotonic()`` clock), ``room``
        records short of full: ``batch_max_wait_ms`` after its oldest record's Kafka timestamp, and no
        later than that after now; the whole wait from now while the broker already holds enough
        records to fill it (a backlog).

        Why the timestamp: records that arrived while the loop was busy with the batch ahead have
        already waited; charging them the whole wait again is what made small producer batches slow.
        Why not under a backlog: there every record is old, and closing each batch at once would cut it
        at whatever one poll returned; full batches are what lets the loop catch up.
        A record without a timestamp (or stamped in the future) counts as arriving now; a producer's
        clock behind this host's only closes batches sooner (smaller batches, never a longer wait)."""
        wait_s = self.settings.batch_max_wait_ms / 1000.0
        now = time.monotonic()
        if self._broker_holds([tp for tp, _ in got], room):
            return now + wait_s
        stamps = [int(b.timestamps.min()) for _, b in got if len(b)]
        oldest = min(stamps) if stamps else -1
        if oldest <= 0:
            return now + wait_s
        waited = min(wait_s, max(0.0, self.clock() - oldest / 1000.0))
        return now + wait_s - waited

    def _broker_holds(self, tps: Iterable[TopicPartition], n: int) -> bool:
        """Whether the broker holds at least ``n`` records of ``tps`` past the consumer's position (a
        backlog), as the last fetch responses told (a partition whose end is not known yet counts none)."""
        waiting = 0
        for tp in tps:
            end = self.consumer.highwater(tp)
            if end is not None:
                waiting += max(0, end - self.consumer.position(tp))
                if waiting >= n:
                    return True
        return waiting >= n

    def _idle_poll_ms(self) -> int:
        """How long a poll with nothing collected yet may wait: 200 ms, or only until the checkpoint interval
        allows one when something waits for a checkpoint (with the changelog, the last batches' outputs)."""
        if not self._checkpoint_offsets():
            return 200
        return int(min(200.0, max(0.0, self._checkpoint_due_in() * 1000.0)))

    def _void(self, records: Records) -> Records:
        """``records`` less those of partitions the last poll's rebalance reset: dropped partitions are
        re-read by their new owner, restored or kept ones from where this member's state stands."""
        reset = [tp.partition for tp in self._reset if tp.topic == records.topic]
        hit = np.isin(records.partitions, reset)
        if not hit.any():
            return records
        owned = self.rebalance.owned()
        for p in sorted(set(records.partitions[hit].tolist())):
            tp = TopicPartition(records.topic, p)
            if tp not in owned:
                first = int(records.offsets[records.partitions == p][0])  # a partition's records ascend
                log.warning("dropped records of a partition revoked during the batch (re-read by its new owner)",
                            extra={**self._log_context(tp), "offset": first})
        return records.select(~hit)

    @property
    def _max_batch(self) -> int:
        """Records one batch may take: the configured size, or less under back-pressure (:meth:`_pace`)."""
        return min(self.settings.batch_max_events, self._batch_cap)

    def _collect_aligned(self, stop: threading.Event) -> Records:
        """One partition's block of offsets [k*B, (k+1)*B), so that a replay cuts the very same batches.

        A block is processed once its last offset (or a later one) has been fetched, or
        ``batch_max_wait_ms`` after its first record arrived (the tail of a partition).
        """
        B = self.settings.batch_max_events
        wait_s = self.settings.batch_max_wait_ms / 1000.0
        while True:
            block = self._ready_block(B)
            if len(block) or stop.is_set():
                return block
            if self._deadline:
                timeout_ms = max(0, int((min(self._deadline.values()) - time.monotonic()) * 1000))
            else:
                timeout_ms = 200
            got = self._poll(min(timeout_ms, 200), B)
            now = time.monotonic()
            for tp, block in got:
                buf = self._buffer.get(tp)
                if buf is None or not len(buf):
                    self._deadline[tp] = now + wait_s
                    self._buffer[tp] = block
                else:
                    self._buffer[tp] = Records.concat([buf, block])
            if not got and not self._deadline:
                return Records.empty()  # idle tick

    def _ready_block(self, B: int) -> Records:
        now = time.monotonic()
        for tp in sorted(self._buffer, key=lambda t: (t.topic, t.partition)):
            buf = self._buffer[tp]
            if not len(buf):
                continue
            end = (buf.offset // B + 1) * B
            n = int(np.searchsorted(buf.offsets, end))  # a partition's offsets ascend
            complete = n < len(buf) or int(buf.offsets[n - 1]) == end - 1
            if complete or now >= self._deadline.get(tp, now):
                block, rest = buf.select(slice(0, n)), buf.select(slice(n, None))
                if len(rest):
                    self._buffer[tp] = rest
                    self._deadline[tp] = now + self.settings.batch_max_wait_ms / 1000.0
                else:
                    del self._buffer[tp]
                    self._deadline.pop(tp, None)
                return block
        return Records.empty()
