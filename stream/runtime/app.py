"""Assemble and run the consumer: settings -> pipeline, Kafka clients, metrics endpoint, run loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from stream.runtime.changelog import Changelog
from stream.runtime.checkpoints import CheckpointStore
from stream.runtime.decode_worker import DecodeAhead, DecodeWorker, available_cpus
from stream.observability.drift import DriftMonitor
from stream.kafka.clients import (
    Publisher,
    ensure_topics,
    make_admin,
    make_stream_consumer,
    make_stream_producer,
    verify_topics,
    wait_for_broker,
)
from stream.kafka.compat import install_columnar_fetch
from stream.kafka.confluent import require_confluent
from stream.kafka.lag import LagMonitor
from stream.kafka.topics import topic_plan
from stream.observability.metrics import Metrics
from stream.runtime.health import Health
from stream.runtime.batch_result import BatchResult
from stream.runtime.pipeline import Pipeline
from stream.runtime.runner import StreamRunner
from stream.runtime.summary import RunSummary
from stream.settings import Settings

__all__ = ["run_consumer"]

log = logging.getLogger(__name__)


def _input_partitions(settings: Settings) -> int:
    admin = make_admin(settings)
    try:
        meta = admin.describe_topics([settings.input_topic])
        parts = meta[0].get("partitions") or []
        return max(1, len(parts))
    except Exception:  # topic missing or broker without DescribeTopics: fall back to one partition
        return 1
    finally:
        admin.close()


def _prepare_topics(settings: Settings) -> None:
    """Create the output topics with their policies (stream/kafka/topics.py), or only check them when
    ``create_topics`` is off; a topic with the wrong ``cleanup.policy`` is one warning line."""
    n = _input_partitions(settings) if settings.create_topics else 1
    roles = {"segments": n, "dead-letters": n, "lineage": 1, "profiles": 1}
    if settings.global_model:
        roles["model"] = 1
    if settings.changelog:
        roles["state-changelog"] = n  # changelog partition p holds the state of input partition p
    parts, configs = topic_plan(settings, roles)
    if settings.create_topics:
        ensure_topics(settings, parts, configs=configs)
    else:
        verify_topics(settings, configs)


def run_consumer(settings: Settings, *, stop: threading.Event | None = None, max_events: int | None = None,
                 idle_exit_s: float | None = None, registry: CollectorRegistry | None = None,
                 on_batch: Callable[[BatchResult, RunSummary], None] | None = None,
                 on_ready: Callable[[StreamRunner], None] | None = None,
                 clock: Callable[[], float] = time.time) -> RunSummary:
    """Run ``segstream run`` until stopped; returns what was processed."""
    if settings.kafka_client == "confluent":
        require_confluent()  # before anything starts: one line naming the extra when it is missing
    pipeline = Pipeline.from_settings(settings)
    log.info("encoder %s (%s, %d dims), %d segments", pipeline.encoder.kind, pipeline.encoder.version,
             pipeline.encoder.dim, settings.segments)
    metrics = Metrics(registry, drift=DriftMonitor.from_settings(settings))
    health = Health(settings.liveness_timeout_s)
    if settings.metrics_port:
        auth = (settings.metrics_auth_user, settings.metrics_auth_password) if settings.metrics_auth_user else None
        tls = (settings.metrics_tls_certfile, settings.metrics_tls_keyfile) if settings.metrics_tls_certfile else None
        port = metrics.serve(settings.metrics_port, settings.metrics_host, probes=health, auth=auth, tls=tls)
        log.info("metrics on %s://%s:%d/metrics (probes: /healthz, /readyz)%s", "https" if tls else "http",
                 settings.metrics_host, port, ", basic auth on /metrics" if auth else "")
    wait_for_broker(settings)
    _prepare_topics(settings)
    confluent = settings.kafka_client == "confluent"
    consumer = make_stream_consumer(settings)
    if settings.columnar_fetch and not confluent:  # the compat check may still say no: kafka-python's own decoding, gauge at 0
        install_columnar_fetch(consumer, metrics)
    producer = make_stream_producer(settings)
    checkpoints = (CheckpointStore(settings.checkpoint_dir, settings.group_id, settings.input_topic)
                   if settings.checkpoint_dir else None)
    publisher = Publisher(producer, metrics, columnar=settings.columnar_produce and not confluent)
    runner = StreamRunner(settings, pipeline, consumer, publisher, metrics, clock=clock,
                          on_batch=on_batch, checkpoints=checkpoints)
    health.loop = runner
    if settings.changelog:
        runner.changelog = Changelog(settings.changelog_name, publisher, pipeline,
                                     extras={"drift": (metrics.drift.state, metrics.drift.load_state)})
    if settings.decode_process and not settings.aligned_batches and available_cpus() >= 2:
        runner.decode_ahead = DecodeAhead(DecodeWorker(pipeline.decoder, gc_threshold=settings.gc_threshold),
                                          on_off=lambda: metrics.decode_process_up.set(0))
        metrics.decode_process_up.set(1)
    if settings.global_model:
        from stream.runtime.model_sync import ModelSync

        runner.model_sync = ModelSync(settings, pipeline.segmenter, runner.publisher, metrics,  # type: ignore[arg-type]
                                      input_partitions=_input_partitions(settings))
        runner.model_sync.catch_up()
    runner.subscribe()
    # lag as the broker sees it, from a consumer of its own: it keeps moving while the loop is stuck
    lag = None
    if settings.lag_probe_interval_s > 0 and settings.sasl_mechanism in ("OAUTHBEARER", "GSSAPI"):
        log.warning("no lag probe: it runs on kafka-python, which has no %s", settings.sasl_mechanism)
    elif settings.lag_probe_interval_s > 0:
        metrics.lag_probe_time.set(time.time())  # a probe that never succeeds must age (SegstreamLagProbeFailing)
        lag = LagMonitor(settings, runner.rebalance.owned, metrics.set_lag).start()
    if on_ready is not None:
        on_ready(runner)
    try:
        summary = runner.run(stop, max_events=max_events, idle_exit_s=idle_exit_s)
        log.info("stopped (%s) after %d events, %d invalid, %d segment changes", summary.stopped_by,
                 summary.events, summary.invalid, summary.changes)
        return summary
    finally:
        try:
            if lag is not None:
                lag.stop()
            if runner.model_sync is not None:
                runner.model_sync.close()
            consumer.close(autocommit=False)
            if runner.decode_ahead is not None:
                runner.decode_ahead.close()
        finally:
            producer.close(timeout=10)
            metrics.shutdown()
