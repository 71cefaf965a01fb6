"""Live observability: a real Prometheus scrapes a live ``segstream run``; every metric the dashboard and
alert rules use is exported; the drift alarm fires after an abrupt drift and not before."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml

from eventlogs.synthetic import SyntheticConfig, generate
from helpers import SegstreamProcess, produce, scrape
from stream.observability.drift import SIGNALS, DriftMonitor
from stream.kafka.embedded_broker import free_port
from stream.observability.metrics import Metrics
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings
from test_deploy import DEPLOY, dashboard_and_rule_metrics

CORE = ["segstream_events_consumed_total", "segstream_consumed_bytes_total", "segstream_events_applied_total",
        "segstream_batch_duration_seconds_bucket", "segstream_segment_share", "segstream_model_version",
        "segstream_drift_alarm_active", "segstream_assignment_churn_ratio"]


def _prom_query(port: int, q: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _sample_names(port: int) -> set[str]:
    return {k.split("{")[0] for k in scrape(port)}


@pytest.mark.integration
def test_prometheus_scrapes_live_consumer_and_dashboard_metrics_exist(broker, topics, tmp_path: Path) -> None:
    prom_bin = shutil.which("prometheus")
    if prom_bin is None:
        pytest.fail("prometheus not found: ./dev test installs Debian's prometheus package")
    broker.create(topics, partitions=2)
    cfg = SyntheticConfig(users=300, groups=3, events=6000, seed=1)
    values = [msgpack.packb(e) for e in generate(cfg)] + [b"\xc1\xc1"]  # one bad record: the DLQ path too
    produce(broker.bootstrap, topics["input"], values, keys=[str(i % 50).encode() for i in range(len(values))])
    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "50", "--batch-max-events", "250",
                            "--lag-probe-interval-s", "1")
    prom = None
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= len(values), timeout_s=180)
        # the repo's scrape config, with the target pointed at the live consumer and the rules at the repo file
        scrape_cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        scrape_cfg["global"]["scrape_interval"] = "1s"
        scrape_cfg["global"]["evaluation_interval"] = "1s"
        scrape_cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{proc.metrics_port}"]
        scrape_cfg["rule_files"] = [str(DEPLOY / "prometheus" / "segstream.rules.yml")]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape_cfg))
        prom_port = free_port()
        prom = subprocess.Popen([prom_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w"))
        deadline, results = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            try:
                results = {m: _prom_query(prom_port, m) for m in CORE}
                up = _prom_query(prom_port, 'up{job="segstream"}')
                if up and up[0]["value"][1] == "1" and all(results.values()):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert all(results.values()), {m: r for m, r in results.items() if not r}
        consumed = float(results["segstream_events_consumed_total"][0]["value"][1])
        assert consumed == len(values)
        invalid = _prom_query(prom_port, 'segstream_events_invalid_total{reason="undecodable"}')
        assert float(invalid[0]["value"][1]) == 1.0
        assert len(results["segstream_segment_share"]) >= 2
        # rules loaded by the server
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5) as resp:
            rules = json.loads(resp.read())["data"]["groups"][0]["rules"]
        assert len(rules) == 16 and all(r["health"] == "ok" for r in rules), rules

        # the broker lag of both partitions comes down to 0 once all is consumed and committed
        deadline, lag = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            lag = {k: v for k, v in scrape(proc.metrics_port).items() if k.startswith("segstream_consumer_lag_records")}
            if len(lag) == 2 and all(v == 0 for v in lag.values()):
                break
            time.sleep(0.5)
        assert len(lag) == 2 and all(v == 0 for v in lag.values()), lag
        # every metric the dashboard and the alerts use is exported by the live consumer
        exported = _sample_names(proc.metrics_port)
        missing = sorted(m for m in dashboard_and_rule_metrics() if m not in exported)
        assert not missing, missing
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        proc.kill()


def test_drift_alarm_fires_after_abrupt_drift_not_before() -> None:
    cfg = SyntheticConfig(users=1500, groups=4, events=60_000, drift_at=0.6, drift_groups=4, noise=0.05, seed=3)
    events = list(generate(cfg))
    settings = Settings(warmup_users=200, batch_max_events=500, half_life_s=43_200.0)
    pipeline = Pipeline.from_settings(settings, now=lambda: float("inf"))
    metrics = Metrics(drift=DriftMonitor(grace_batches=20, psi_alarm=0.25))
    fired_at: list[float] = []  # newest event time of batches whose detector fired
    active_before = []
    for i in range(0, len(events), 500):
        chunk = events[i: i + 500]
        result = pipeline.process_objects(chunk)
        before = sum(metrics.drift.alarms_total.values())
        metrics.observe_batch(result, pipeline, records=len(chunk), value_bytes=0, seconds=0.0)
        if sum(metrics.drift.alarms_total.values()) > before:
            fired_at.append(result.max_event_time)
        if result.max_event_time < cfg.drift_ts:
            active_before.append(max(metrics.drift_alarm_active.labels(s)._value.get() for s in SIGNALS))
    assert cfg.drift_ts is not None
    assert fired_at, "no drift alarm after the drift"
    assert min(fired_at) >= cfg.drift_ts, "drift alarm before the drift"
    assert min(fired_at) - cfg.drift_ts < 2 * 86_400  # within two days of event time (log spans 14 days)
    assert max(active_before) == 0 and sum(metrics.drift.alarms_total.values()) >= 1
    assert metrics.drift.psi > 0.25  # the embedding distribution moved away from the reference window
    assert np.isfinite(metrics.drift.mean_distance)
    assert metrics.model_updates._value.get() >= 2 and metrics.drift.last_shift > 0  # centroids moved between versions
    assert metrics.lineage_events.labels("born")._value.get() >= settings.segments  # the seeded segment ids


def test_segment_series_capped_and_retired_removed() -> None:
    from prometheus_client import generate_latest

    m = Metrics(max_segment_series=3)
    m.set_segments({1: 10, 2: 30, 3: 55, 4: 5}, [1, 2, 3, 4])
    text = generate_latest(m.registry).decode()
    assert 'segstream_segment_share{segment="3"} 0.55' in text
    assert 'segment="4"' not in text  # capped at 3 series
    m.set_segments({1: 50, 3: 50}, [1, 3])  # segment 2 retired
    text = generate_latest(m.registry).decode()
    assert 'segment="2"' not in text and 'segstream_segment_users{segment="1"} 50.0' in text
