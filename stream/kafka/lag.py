"""Consumer lag as the broker sees it, measured on a side thread with a consumer of its own.

The run loop's consumer is not thread-safe and stops polling when the loop is
stuck, so lag it reported itself froze at its last value (often 0) exactly
when it mattered. :class:`LagMonitor` runs beside the loop, every
``SEGSTREAM_LAG_PROBE_INTERVAL_S``, and for each input partition this member
owns reads:

* the group's **committed offset** (OffsetFetch; what a restart would resume from);
* the **log end** as the high-water mark of a fetch response. ListOffsets
  (``end_offsets``) is not used: the embedded broker (Tansu) answers it wrongly
  for multi-record batches, while the fetch response's high-water mark is right
  there and on Apache Kafka alike;
* the **Kafka timestamp of the record at the committed offset**, which the same
  fetch returns: the oldest record not yet checkpointed.

The probe consumer only ``assign``s partitions (it never joins the group, so it
cannot trigger a rebalance), never commits, and fetches at most one record
batch per partition per probe (``max_partition_fetch_bytes=1``: a broker still
returns one whole batch). Lag is ``high-water mark - committed``; the age is
``now - timestamp`` of that record, 0 when nothing waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from stream.kafka.clients import make_consumer
from stream.kafka.consumer import TopicPartition
from stream.settings import Settings

__all__ = ["LagMonitor", "LagProbe", "PartitionLag"]

log = logging.getLogger(__name__)


class PartitionLag(NamedTuple):
    records: int  # log end minus the group's committed offset
    oldest_age_s: float  # now minus the Kafka timestamp of the record at the committed offset (0: none waits)


class LagProbe:
    """One measurement of the group's lag on given partitions (use it from one thread only)."""

    def __init__(self, settings: Settings, *, fetch_window_s: float = 0.5, clock: Callable[[], float] = time.time,
                 consumer: Any = None) -> None:
        self.fetch_window_s = fetch_window_s
        self.clock = clock
        self.consumer = consumer if consumer is not None else make_consumer(
            settings, client_id=f"{settings.client_id}-lag", max_partition_fetch_bytes=1, fetch_max_bytes=1,
            fetch_max_wait_ms=100, max_poll_records=1000)
        self._assigned: list[TopicPartition] = []

    def measure(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, PartitionLag]:
        """Lag of each partition; a partition whose fetch did not answer within the window is left out."""
        tps = sorted(partitions)
        c = self.consumer
        if tps != self._assigned:
            c.assign(tps)
            self._assigned = tps
        if not tps:
            return {}
        start: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = c.committed(tp)
            # nothing committed yet: the group starts at the log start (auto_offset_reset=earliest)
            start[tp] = committed if committed is not None else c.beginning_offsets([tp])[tp]
            c.seek(tp, start[tp])
        first: dict[TopicPartition, Any] = {}
        deadline = time.monotonic() + self.fetch_window_s
        while len(first) < len(tps):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            for tp, recs in c.poll(timeout_ms=left_ms).items():
                if recs and tp not in first:
                    first[tp] = recs[0]
        now = self.clock()
        out = {}
        for tp in tps:
            hw = c.highwater(tp)
            if hw is None:
                continue
            rec = first.get(tp)
            age = max(0.0, now - rec.timestamp / 1000.0) if rec is not None and rec.timestamp >= 0 else 0.0
            out[tp] = PartitionLag(max(0, hw - start[tp]), age)
        return out

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class LagMonitor:
    """Runs a :class:`LagProbe` every ``interval_s`` on a daemon thread and hands each result to ``publish``.

    ``owned`` gives the partitions to measure (the run loop's rebalance tracker, which is thread-safe);
    a partition left out of one probe keeps its last value. ``publish`` gets
    ``{(topic, partition): (records, oldest age)}`` for every owned partition measured so far.
    """

    def __init__(self, settings: Settings, owned: Callable[[], Iterable[TopicPartition]],
                 publish: Callable[[dict[tuple[str, int], tuple[int, float]]], None], *,
                 probe_factory: Callable[[], LagProbe] | None = None) -> None:
        self.interval_s = settings.lag_probe_interval_s
        self.owned = owned
        self.publish = publish
        self._factory = probe_factory or (lambda: LagProbe(settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segstream-lag", daemon=True)
        self._last: dict[TopicPartition, PartitionLag] = {}
        self.probes = 0  # successful probes

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def probe_once(self, probe: LagProbe) -> None:
        owned = set(self.owned())
        fresh = probe.measure(owned)
        self._last = {tp: fresh.get(tp, self._last.get(tp)) for tp in owned if tp in fresh or tp in self._last}
        self.publish({(tp.topic, tp.partition): (lag.records, lag.oldest_age_s) for tp, lag in self._last.items()})
        self.probes += 1

    def _run(self) -> None:
        probe: LagProbe | None = None
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    if probe is None:
                        probe = self._factory()
                    self.probe_once(probe)
                    if failing:
                        log.info("broker lag probe works again")
                    failing = False
                except Exception as exc:  # the broker is away or the group is rebalancing: try again next time
                    if not failing:
                        log.warning("broker lag probe failed (lag metrics stand still until it works): %s", exc)
                    failing = True
                self._stop.wait(self.interval_s)
        finally:
            if probe is not None:
                try:
                    probe.close()
                except Exception:  # closing at shutdown: nothing left to do about it
                    pass
