"""Prometheus metrics of the consumer (names in base units, ``segstream_`` prefix).

All metrics live on one injected :class:`~prometheus_client.CollectorRegistry`
(a fresh one per test). Per-segment series are capped at
``max_segment_series`` and removed when a segment retires, so label sets
stay bounded.

    >>> from prometheus_client import generate_latest
    >>> m = Metrics()
    >>> m.events_consumed.inc(3)
    >>> m.event_to_publish.observe_many(np.array([0.004, 0.2, 3.0]))
    >>> text = generate_latest(m.registry).decode()
    >>> "segstream_events_consumed_total 3.0" in text
    True
    >>> 'segstream_event_to_publish_seconds_bucket{le="0.005"} 1.0' in text
    True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stream.observability.drift import SIGNALS, DriftMonitor
from stream.observability.endpoint import OpsEndpoint, Probes
from state.events import REASONS
from stream.settings import Settings

if TYPE_CHECKING:
    from state.kmeans import LineageEvent
    from state.segments import SegmentModel
    from stream.runtime.batch_result import BatchResult
    from stream.runtime.pipeline import Pipeline

__all__ = ["Metrics", "ArrayHistogram", "LATENCY_BUCKETS"]

disable_created_metrics()  # the *_created series only add noise to dashboards

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LINEAGE_KINDS = ("born", "retired", "merged", "split")
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class ArrayHistogram(Collector):
    """A histogram that takes a whole numpy array per call (one observe per event would dominate the hot path)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        add = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += add
            self._sum += float(values.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cum = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(floatToGoString(float(b)), float(c)) for b, c in zip(self.bounds, cum[:-1])]
        buckets.append(("+Inf", float(cum[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total_sum)

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, buckets=[("+Inf", 0.0)], sum_value=0.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, max_segment_series: int = 64,
                 drift: DriftMonitor | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.max_segment_series = max_segment_series
        self.events_consumed = Counter("segstream_events_consumed", "Records consumed from the input topic (valid or not).", registry=r)
        self.bytes_consumed = Counter("segstream_consumed_bytes", "Bytes of record values consumed.", registry=r)
        self.events_applied = Counter("segstream_events_applied", "Valid behaviour events folded into user state.", registry=r)
        self.events_invalid = Counter("segstream_events_invalid", "Records rejected by the input contract, by reason.", ["reason"], registry=r)
        for reason in REASONS:
            self.events_invalid.labels(reason)
        self.dead_letters = Counter("segstream_dead_letters", "Records written to the dead-letter topic.", registry=r)
        self.segment_changes = Counter("segstream_segment_changes", "Segment-change events published (first assignments included).", registry=r)
        self.users_tracked = Gauge("segstream_users_tracked", "Users currently held in state.", registry=r)
        self.users_evicted = Counter("segstream_users_evicted", "Users evicted as least recently active (max_users reached).", registry=r)
        self.users_erased = Counter("segstream_users_erased", "Users erased by a delete event.", registry=r)
        self.segments = Gauge("segstream_segments", "Segments in the current model.", registry=r)
        self.segment_users = Gauge("segstream_segment_users", "Users assigned to each segment.", ["segment"], registry=r)
        self.segment_share = Gauge("segstream_segment_share", "Share of assigned users in each segment (0..1).", ["segment"], registry=r)
        self.model_version = Gauge("segstream_model_version", "Version of the published segment model in use.", registry=r)
        self.model_leader = Gauge("segstream_model_leader", "1 while this instance merges and announces the global model (it owns input partition 0).", registry=r)
        self.model_member_silent = Gauge("segstream_model_member_silent_seconds", "Global model: seconds since each member's latest summary was sent, as this instance has read them (left out of merges past SEGSTREAM_MODEL_SILENT_AFTER_S).", ["member"], registry=r)
        self.model_messages = Counter("segstream_model_messages", "Model-topic records sent and received, by kind (model, summary, invalid) and direction.", ["kind", "direction"], registry=r)
        self.model_updates = Counter("segstream_model_updates", "Segment model versions published.", registry=r)
        self.label_agreement = Gauge("segstream_label_agreement", "At each published model version: share of the users holding a segment whose label is certified to be what that model gives them with hysteresis (a lower bound; the rest are queued for re-assignment, a bounded number per batch). 1 before the first version.", registry=r)
        self.label_agreement.set(1.0)
        self.batch_duration = Histogram("segstream_batch_duration_seconds", "Wall time to process, publish and commit one micro-batch.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.batch_events = Histogram("segstream_batch_events", "Records per micro-batch.", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.encoder_duration = Histogram("segstream_encoder_duration_seconds", "Encoder time per micro-batch.",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_publish = ArrayHistogram("segstream_event_to_publish_seconds",
                                               "From a record's Kafka timestamp to its batch's outputs leaving: sent after their checkpoint's commit point (state changelog on), confirmed (off).",
                                               LATENCY_BUCKETS, r)
        self.publish_failures = Counter("segstream_publish_failures", "Sends that failed (retried before any commit).", registry=r)
        self.commits = Counter("segstream_offset_commits", "Successful offset commits.", registry=r)
        self.commit_failures = Counter("segstream_offset_commit_failures", "Offset commits refused (e.g. during a rebalance).", registry=r)
        # measured from the broker by a side thread (stream.kafka.lag), so they keep moving while the run loop is stuck
        self.consumer_lag = Gauge("segstream_consumer_lag_records", "Log end offset minus the group's committed offset, per input partition this member owns, read from the broker by a side thread every SEGSTREAM_LAG_PROBE_INTERVAL_S (it keeps growing while the run loop is stuck).",
                                  ["topic", "partition"], registry=r)
        self.oldest_unprocessed_age = Gauge("segstream_oldest_unprocessed_event_age_seconds", "Now minus the Kafka timestamp of the record at the group's committed offset (the oldest record not yet checkpointed), per owned partition; 0 when none waits.",
                                            ["topic", "partition"], registry=r)
        self.lag_probe_time = Gauge("segstream_lag_probe_timestamp_seconds", "Wall time of the last successful broker lag probe (the process start until the first; 0: no probe, SEGSTREAM_LAG_PROBE_INTERVAL_S=0).", registry=r)
        self.last_checkpoint = Gauge("segstream_last_checkpoint_timestamp_seconds", "Wall time of the last successful checkpoint: its markers confirmed (state changelog on), or outputs confirmed, state persisted and offsets committed (off); 0 before the first.", registry=r)
        self.loop_turn = Gauge("segstream_loop_turn_timestamp_seconds", "Wall time the run loop last turned (one poll and its batch); /healthz fails once it is SEGSTREAM_LIVENESS_TIMEOUT_S old.", registry=r)
        self.ready = Gauge("segstream_ready", "1 while /readyz answers 200 (in the group, every owned partition restored), else 0.", registry=r)
        self.lineage_events = Counter("segstream_segment_lineage_events", "Segment lineage events published, by kind (born, retired, merged, split): segment ids appearing and ending.", ["kind"], registry=r)
        for kind in LINEAGE_KINDS:
            self.lineage_events.labels(kind)
        self.partition_assigned = Gauge("segstream_partition_assigned", "1 for each input partition assigned to this member (the series goes when the partition does).",
                                        ["topic", "partition"], registry=r)
        self.last_event_time = Gauge("segstream_last_event_timestamp_seconds", "Event time of the newest event processed.", registry=r)
        self.decode_process_up = Gauge("segstream_decode_process_up", "1 while micro-batches are decoded in a child process (SEGSTREAM_DECODE_PROCESS); 0 when decoded in-process (off, fewer than 2 CPUs, or the child failed).", registry=r)
        self.kafka_fast_path = Gauge("segstream_kafka_fast_path", "1 while the columnar Kafka path is in use (path: fetch, produce); 0 when kafka-python's own path is: the setting is off, or the start-up check of kafka-python's internals failed (a warning names what).", ["path"], registry=r)
        for path in ("fetch", "produce"):  # 0 until a fast path is switched on, so both series always exist
            self.kafka_fast_path.labels(path=path).set(0)
        # --- checkpoints, recovery, duplicates ---
        self.checkpoint_duration = Histogram("segstream_checkpoint_duration_seconds",
                                             "Wall time of one checkpoint (confirm outputs, snapshot state, commit).",
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.restores = Counter("segstream_partition_restores", "Partitions whose state was restored on assignment.", registry=r)
        self.duplicates = Counter("segstream_events_duplicate", "Events dropped as repeats of a recent event_id.", registry=r)
        # drift and segment health
        self.centroid_shift = Gauge("segstream_centroid_shift", "Mean Euclidean move of surviving centroids at the last model update.", registry=r)
        self.churn = Gauge("segstream_assignment_churn_ratio", "Share of updated users whose segment changed in the last batch.", registry=r)
        self.mean_distance = Gauge("segstream_mean_distance", "Mean distance of the last batch's updated users to their assigned centroid.", registry=r)
        self.psi = Gauge("segstream_embedding_psi", "Population stability index of recent embeddings against the reference window.", registry=r)
        self.fit_ratio = Gauge("segstream_drift_fit_ratio", "Last batch's mean distance to the nearest centroid of the model version it arrived to, over that version's baseline (the same on its first SEGSTREAM_DRIFT_BASELINE_EMBEDDINGS embeddings); about 1 while the model fits the traffic.", registry=r)
        self.fit_score = Gauge("segstream_drift_score", "Drift CUSUM of the fit ratio (its rises beyond 1 + SEGSTREAM_DRIFT_DELTA, summed over embeddings, in thousands); a distance detection when it passes SEGSTREAM_DRIFT_THRESHOLD, then back to 0.", registry=r)
        self.drift_alarms = Counter("segstream_drift_alarms", "Drift detections, by signal (distance: the CUSUM of the fit ratio; psi: PSI crossing a threshold, when set).", ["signal"], registry=r)
        self.drift_alarm_active = Gauge("segstream_drift_alarm_active", "1 while a drift alarm on the signal is held up, else 0.", ["signal"], registry=r)
        for sig in SIGNALS:
            self.drift_alarms.labels(sig)
            self.drift_alarm_active.labels(sig).set(0)
        self.model_updated_at = Gauge("segstream_model_updated_timestamp_seconds", "Wall time of the last model update (time() minus it: time since update).", registry=r)
        self.model_age = Gauge("segstream_model_age_seconds", "Seconds since the last model update.", registry=r)
        self.model_age.set_function(lambda: (time.time() - self._model_updated) if self._model_updated else 0.0)
        self._model_updated = 0.0
        self._prev_model: SegmentModel | None = None
        self.drift = drift if drift is not None else DriftMonitor.from_settings(Settings())
        self._segment_labels: set[str] = set()
        self._lag_labels: set[tuple[str, str]] = set()
        self._lag_lock = threading.Lock()  # set_lag runs on the lag probe's thread
        self._assigned_labels: set[tuple[str, str]] = set()

    def serve(self, port: int, host: str = "127.0.0.1", *, probes: Probes | None = None,
              auth: tuple[str, str] | None = None, tls: tuple[str, str] | None = None) -> int:
        """Start the HTTP endpoint (/metrics, and /healthz and /readyz from ``probes``); returns the bound
        port (useful with port 0). ``auth``: (user, password) of basic auth on /metrics; ``tls``: (cert, key)."""
        self._server = OpsEndpoint(self.registry, probes, auth=auth, tls=tls).start(port, host)
        if probes is not None:
            self.loop_turn.set_function(probes.loop_turned_at)
            self.ready.set_function(lambda: 1.0 if probes.ready()[0] else 0.0)
        return self._server.port

    def shutdown(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()

    def observe_batch(self, result: BatchResult, pipeline: Pipeline, *, records: int, value_bytes: int,
                      seconds: float) -> None:
        """Everything one processed micro-batch tells the metrics."""
        self.events_consumed.inc(records)
        self.bytes_consumed.inc(value_bytes)
        self.events_applied.inc(result.events)
        for rej in result.rejected:
            self.events_invalid.labels(rej.reason).inc()
        self.dead_letters.inc(len(result.rejected))
        self.segment_changes.inc(len(result.changes))
        self.users_tracked.set(len(pipeline.store))
        self.users_evicted.inc(result.evicted)
        self.users_erased.inc(len(result.erased))
        self.duplicates.inc(result.duplicates)
        self.batch_events.observe(records)
        self.batch_duration.observe(seconds)
        self.encoder_duration.observe(result.encode_seconds)
        if result.max_event_time == result.max_event_time:  # not NaN
            self.last_event_time.set(result.max_event_time)
        model = pipeline.model
        arrived = self._prev_model if result.new_model is not None else model  # the version the batch came to
        if model is not None:
            self.model_version.set(model.version)
            if result.new_model is not None:
                self.model_updates.inc()
                self._model_updated = time.time()
                self.model_updated_at.set(self._model_updated)
                prev = self._prev_model
                if prev is not None:
                    self.centroid_shift.set(self.drift.model_changed(prev.segment_ids, prev.centroids,
                                                                     model.segment_ids, model.centroids))
                self._prev_model = model
            if result.label_agreement is not None:
                self.label_agreement.set(result.label_agreement)
            self.observe_drift(result, model, arrived)
            self.set_segments(pipeline.users_per_segment(), model.segment_ids.tolist())
        self.observe_lineage(result.lineage)

    def observe_lineage(self, events: Iterable[LineageEvent]) -> None:
        """Count published lineage events by kind (the id-churn alert reads births and ends per hour)."""
        for ev in events:
            if getattr(ev, "announce", True):
                self.lineage_events.labels(ev.kind).inc()

    def observe_drift(self, result: BatchResult, model: SegmentModel | None = None,
                      arrived: SegmentModel | None = None) -> None:
        """Churn, mean distance, fit ratio, PSI and drift alarms of one batch (see :mod:`stream.observability.drift`;
        ``arrived``: the model version in use when the batch came, ``model``: the one after it)."""
        if len(result.distances) == 0:
            return
        own = result.changes.previous[: len(result.changes) - result.reassigned]  # re-assignments: the model's doing
        first = int((own < 0).sum())  # first assignments are not churn
        snap = self.drift.observe(distances=result.distances, changed=len(own) - first,
                                  updated=len(result.distances) - first, embeddings=result.embeddings,
                                  embedding_keys=result.embedding_keys, model=model, arrived=arrived)
        self.churn.set(snap.churn)
        if snap.mean_distance == snap.mean_distance:
            self.mean_distance.set(snap.mean_distance)
        self.psi.set(snap.psi)
        if snap.fit_ratio == snap.fit_ratio:
            self.fit_ratio.set(snap.fit_ratio)
        self.fit_score.set(snap.fit_score)
        for sig in SIGNALS:
            if snap.detections[sig]:
                self.drift_alarms.labels(sig).inc()
            self.drift_alarm_active.labels(sig).set(1.0 if snap.in_alarm[sig] else 0.0)

    def set_segments(self, users_per_segment: dict[int, int], live_segments: Iterable[int]) -> None:
        """Per-segment gauges for live segments (capped); series of retired segments are removed."""
        live = sorted(int(s) for s in live_segments)[: self.max_segment_series]
        total = sum(users_per_segment.values())
        labels = {str(s) for s in live}
        for stale in self._segment_labels - labels:
            self.segment_users.remove(stale)
            self.segment_share.remove(stale)
        for s in live:
            n = users_per_segment.get(s, 0)
            self.segment_users.labels(str(s)).set(n)
            self.segment_share.labels(str(s)).set(n / total if total else 0.0)
        self._segment_labels = labels
        self.segments.set(len(live))

    def set_assigned(self, owned: list[tuple[str, int]]) -> None:
        labels = {(t, str(p)) for t, p in owned}
        for stale in self._assigned_labels - labels:
            self.partition_assigned.remove(*stale)
        for label in labels:
            self.partition_assigned.labels(*label).set(1)
        self._assigned_labels = labels

    def set_lag(self, lags: dict[tuple[str, int], tuple[int, float]]) -> None:
        """One broker lag probe: (topic, partition) -> (records, age in seconds of the oldest unprocessed
        record) for each owned partition; the series of partitions no longer owned go."""
        with self._lag_lock:
            labels = {(t, str(p)) for t, p in lags}
            for stale in self._lag_labels - labels:
                self.consumer_lag.remove(*stale)
                self.oldest_unprocessed_age.remove(*stale)
            for (t, p), (lag, age) in lags.items():
                self.consumer_lag.labels(t, str(p)).set(lag)
                self.oldest_unprocessed_age.labels(t, str(p)).set(age)
            self._lag_labels = labels
            self.lag_probe_time.set(time.time())
