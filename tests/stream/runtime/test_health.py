"""/healthz and /readyz of a real run loop (a scripted consumer in place of Kafka), over HTTP:
not ready before the group, while a rebalance is applied and while partitions replay up to their
commit, ready after; not alive while the loop is stuck. The drift monitor's state goes through the
same checkpoint and restore."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from eventlogs.synthetic import SyntheticConfig, generate
from stream.kafka import TopicPartition
from stream.observability.drift import DriftMonitor
from stream.observability.metrics import Metrics
from stream.runtime.checkpoints import CheckpointStore
from stream.runtime.health import Health
from stream.runtime.pipeline import Pipeline
from stream.runtime.runner import StreamRunner
from stream.settings import Settings

TP = TopicPartition("events", 0)


class ScriptedConsumer:
    """The consumer calls the run loop makes, with assignments handed over inside ``poll`` (as kafka-python
    runs rebalance callbacks) and a switch that makes ``poll`` hang, as a stuck call would."""

    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self._committed = committed
        self.listener: Any = None
        self.positions: dict[TopicPartition, int] = {}
        self.to_assign: list[TopicPartition] = []
        self.during_restore: list[tuple[bool, str]] = []  # readiness seen while the loop restored
        self.runner: StreamRunner | None = None
        self.hang = threading.Event()
        self.release = threading.Event()
        self.commits: list[dict] = []

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        if self.hang.is_set():
            self.release.wait()
        if self.to_assign:
            assigned, self.to_assign = self.to_assign, []
            self.listener.on_partitions_assigned(assigned)
        else:
            time.sleep(min(timeout_ms, 20) / 1000.0)
        return {}

    def committed(self, tp: TopicPartition) -> int | None:
        assert self.runner is not None
        self.during_restore.append(self.runner.readiness())
        return self._committed.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)

    def group_metadata(self) -> SimpleNamespace:
        return SimpleNamespace(generation_id=1, member_id="m")


class NullPublisher:
    def confirm(self) -> int:
        return 0


def _runner(consumer: ScriptedConsumer, pipeline: Pipeline, metrics: Metrics,
            checkpoints: CheckpointStore | None = None, **settings: Any) -> StreamRunner:
    s = Settings(input_topic="events", warmup_users=50, **settings)
    r = StreamRunner(s, pipeline, consumer, NullPublisher(), metrics, checkpoints=checkpoints)  # type: ignore[arg-type]
    consumer.runner = r
    return r


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def _events(n: int, seed: int) -> list[dict]:
    return list(generate(SyntheticConfig(users=300, groups=3, events=n, seed=seed)))


def _checkpointed_state(tmp_path: Any) -> tuple[CheckpointStore, DriftMonitor]:
    """A first runner's checkpoint of partition 0 at offset 5, its drift reference filled."""
    pipeline = Pipeline.from_settings(Settings(warmup_users=50))
    metrics = Metrics(CollectorRegistry(), drift=DriftMonitor(reference_size=300, grace_batches=0))
    consumer = ScriptedConsumer({TP: None})
    store = CheckpointStore(tmp_path, "g", "events")
    first = _runner(consumer, pipeline, metrics, store)
    first.subscribe()
    consumer.to_assign = [TP]
    first._poll(0, 10)
    events = _events(4000, seed=1)
    for i in range(0, len(events), 500):
        result = pipeline.process_objects(events[i:i + 500])
        metrics.observe_batch(result, pipeline, records=500, value_bytes=0, seconds=0.0)
    assert metrics.drift.state()["shares"] is not None  # the reference is set
    first._state_offsets[TP] = 5
    first.checkpoint({TP: 5})
    assert consumer.commits and metrics.last_checkpoint._value.get() > 0
    return store, metrics.drift


def test_readyz_waits_for_the_group_the_restore_and_the_replay_then_turns_ready(tmp_path) -> None:
    store, drift_before = _checkpointed_state(tmp_path)
    consumer = ScriptedConsumer({TP: 10})  # committed beyond the snapshot: offsets 5..9 are replayed
    metrics = Metrics(CollectorRegistry(), drift=DriftMonitor(reference_size=300, grace_batches=0))
    runner = _runner(consumer, Pipeline.from_settings(Settings(warmup_users=50)), metrics, store)
    health = Health(60.0)
    health.loop = runner
    port = metrics.serve(0, probes=health)
    try:
        runner.subscribe()
        assert _get(port, "/readyz") == (503, "not in the consumer group yet")
        assert _get(port, "/healthz") == (200, "ok")
        consumer.listener.on_partitions_assigned([TP])  # the callback ran, the loop has not applied it yet
        assert _get(port, "/readyz") == (503, "applying a rebalance (restoring partitions)")
        runner._poll(0, 10)
        assert consumer.during_restore == [(False, "applying a rebalance (restoring partitions)")]
        assert consumer.positions[TP] == 5  # restored from the snapshot, replaying up to the commit
        assert _get(port, "/readyz") == (503, "replaying 1 partition(s) up to their committed offsets")
        assert metrics.registry.get_sample_value("segstream_ready") == 0
        consumer.positions[TP] = 10
        runner._check_restored()
        assert _get(port, "/readyz") == (200, "ok")
        assert metrics.registry.get_sample_value("segstream_ready") == 1
        # the drift reference came back with the state: not learnt again from post-restart traffic
        restored, before = metrics.drift.state(), drift_before.state()
        assert restored["batches"] == before["batches"] > 0
        np.testing.assert_array_equal(restored["edges"], before["edges"])
        np.testing.assert_array_equal(restored["shares"], before["shares"])
    finally:
        metrics.shutdown()


def test_healthz_fails_while_the_loop_is_stuck_and_recovers(tmp_path) -> None:
    consumer = ScriptedConsumer({TP: None})
    metrics = Metrics(CollectorRegistry())
    runner = _runner(consumer, Pipeline.from_settings(Settings(warmup_users=50)), metrics)
    health = Health(0.5)
    health.loop = runner
    port = metrics.serve(0, probes=health)
    stop = threading.Event()
    loop = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    try:
        runner.subscribe()
        consumer.to_assign = [TP]
        loop.start()
        deadline = time.monotonic() + 10
        while _get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(port, "/readyz") == (200, "ok")  # nothing to restore
        time.sleep(0.6)  # longer than the liveness timeout: a turning loop stays alive
        assert _get(port, "/healthz") == (200, "ok")
        turned = metrics.registry.get_sample_value("segstream_loop_turn_timestamp_seconds")
        consumer.hang.set()  # the next poll never returns
        deadline = time.monotonic() + 10
        while _get(port, "/healthz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        code, reason = _get(port, "/healthz")
        assert code == 503 and reason.startswith("the run loop has not turned for"), reason
        assert metrics.registry.get_sample_value("segstream_loop_turn_timestamp_seconds") >= turned  # the gauge stands at the last turn
        assert time.time() - metrics.registry.get_sample_value("segstream_loop_turn_timestamp_seconds") > 0.5
        consumer.hang.clear()
        consumer.release.set()
        deadline = time.monotonic() + 10
        while _get(port, "/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(port, "/healthz") == (200, "ok")
    finally:
        consumer.hang.clear()
        consumer.release.set()
        stop.set()
        loop.join(timeout=10)
        metrics.shutdown()
