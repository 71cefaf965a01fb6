"""The alert rules end to end: a real Prometheus (the repo's scrape config and rules, every duration cut by
``deploy/prometheus/scale_rules.py`` to seconds) scrapes two live ``segstream run`` processes.

One consumes a log whose planted groups drift abruptly at 60 % of its time span, the other the same
kind of log without drift. Then the first is SIGKILLed, and the second's loop is stuck while
records keep arriving: its decode child is SIGSTOPped, so the run loop blocks waiting for a decoded
batch while the process (its HTTP endpoint, Kafka heartbeat and lag probe threads) lives on. A
SIGSTOP of the whole process would freeze the lag probe too; Prometheus then sees the target down,
which is what ``SegstreamTargetDown`` is for.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import msgpack
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from helpers import SegstreamProcess, produce
from prom_helpers import PrometheusServer, panel_queries, wait_for
from stream.kafka.embedded_broker import free_port

EVENTS = 60_000
ARGS = ("--warmup-users", "200", "--batch-max-events", "500", "--half-life-s", "43200",
        "--lag-probe-interval-s", "1", "--liveness-timeout-s", "3")


def _topics() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"input": f"events-{tag}", "output": f"segments-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}"}


def _log(drift: bool) -> list[bytes]:
    cfg = SyntheticConfig(users=1500, groups=4, events=EVENTS, noise=0.05, seed=3,
                          drift_at=0.6 if drift else None, drift_groups=4 if drift else 0)
    return [msgpack.packb(e) for e in generate(cfg)]


def _decode_child(pid: int) -> int | None:
    """The decode process (``stream.runtime.decode_worker``) started by ``pid``, if it runs one."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"decode_worker" in cmdline:
            return int(entry)
    return None


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _value(prom: PrometheusServer, q: str) -> float:
    result = prom.query(q)
    assert result, q
    return float(result[0]["value"][1])


@pytest.mark.integration
def test_alerts_fire_on_drift_down_and_stall_and_dashboard_queries_return_data(broker, tmp_path: Path) -> None:
    drift_t, still_t = _topics(), _topics()
    broker.create(drift_t)
    broker.create(still_t)
    produce(broker.bootstrap, drift_t["input"], _log(drift=True))
    still_log = _log(drift=False)
    produce(broker.bootstrap, still_t["input"], still_log)

    drift_port, still_port = free_port(), free_port()
    drift_inst, still_inst = f"127.0.0.1:{drift_port}", f"127.0.0.1:{still_port}"
    # Prometheus first: it must have scraped each drift counter at 0 before the first detection
    prom = PrometheusServer(tmp_path, [drift_inst, still_inst]).start()
    drift = SegstreamProcess(broker.settings(drift_t), *ARGS, metrics_port=drift_port)
    still = SegstreamProcess(broker.settings(still_t), *ARGS, metrics_port=still_port)
    stopped_child: int | None = None
    feeding = threading.Event()
    feeder: threading.Thread | None = None
    try:
        # --- drift: the alert reaches firing on the drifting log --------------------------------
        wait_for(lambda: prom.firing("SegstreamDriftDetected", drift_inst), 120, "drift alert firing")
        for p in (drift, still):
            p.wait_metric("segstream_events_consumed_total", lambda v: v == EVENTS, timeout_s=120)
        wait_for(lambda: _value(prom, f'sum(segstream_events_consumed_total{{instance="{still_inst}"}})') == EVENTS,
                 30, "prometheus saw the stationary log consumed")
        # ... and on the stationary log it was never even pending (ALERTS keeps pending and firing states)
        history = prom.query(f'max_over_time(ALERTS{{alertname="SegstreamDriftDetected",instance="{still_inst}"}}[10m])')
        assert history == [], history
        assert _value(prom, f'sum(segstream_drift_alarms_total{{instance="{still_inst}"}})') == 0
        assert prom.query(f'max_over_time(ALERTS{{alertname="SegstreamDriftDetected",instance="{drift_inst}",'
                          f'alertstate="firing"}}[10m])')

        # --- dashboard: every panel query returns data from this Prometheus ---------------------
        empty = [(title, q) for title, q in panel_queries() if not prom.query(q)]
        assert not empty, empty

        # --- down: SIGKILL -------------------------------------------------------------------
        assert not prom.alerts("SegstreamTargetDown", drift_inst)
        drift.proc.kill()
        drift.proc.communicate()

        # --- stall: the loop is stuck, records keep coming -----------------------------------
        assert not prom.alerts("SegstreamConsumerStalled", still_inst)
        stopped_child = _decode_child(still.proc.pid)
        if stopped_child is not None:
            os.kill(stopped_child, signal.SIGSTOP)

            def feed() -> None:  # bursts: the loop takes one batch and blocks on the next, decoded ahead
                i = 0
                while not feeding.is_set():
                    produce(broker.bootstrap, still_t["input"], still_log[i:i + 2000])
                    i = (i + 2000) % (len(still_log) - 2000)
                    feeding.wait(0.5)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()

        wait_for(lambda: prom.firing("SegstreamTargetDown", drift_inst), 60, "down alert firing")
        if stopped_child is None:
            pytest.skip("no decode process (fewer than 2 CPUs): the stall scenario needs one to hang")
        wait_for(lambda: prom.firing("SegstreamConsumerStalled", still_inst), 60, "stalled alert firing")
        lag_q = f'sum(segstream_consumer_lag_records{{instance="{still_inst}"}})'
        first = _value(prom, lag_q)
        wait_for(lambda: _value(prom, lag_q) > first, 30, "broker lag still growing while stalled")
        assert first > 0
        assert still.proc.poll() is None  # alive, serving, yet stuck:
        assert _http_status(still_port, "/healthz") == 503
        assert _http_status(still_port, "/readyz") == 200  # owns its partition, nothing to restore
    finally:
        feeding.set()
        if feeder is not None:
            feeder.join(timeout=30)
        if stopped_child is not None:
            try:
                os.kill(stopped_child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        drift.kill()
        still.kill()
        prom.stop()
