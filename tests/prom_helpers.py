"""A real Prometheus server for tests: the repo's scrape config and rules, pointed at live ``segstream run``
processes on loopback, with durations shortened by ``deploy/prometheus/scale_rules.py``."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from stream.kafka.embedded_broker import free_port

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "segstream.json"


def scale_rules_module() -> ModuleType:
    """``deploy/prometheus/scale_rules.py`` (a standalone script, not a package module)."""
    spec = importlib.util.spec_from_file_location("scale_rules", PROM_DIR / "scale_rules.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PrometheusServer:
    """Debian's ``prometheus`` on a free loopback port, scraping ``targets`` as job ``segstream`` every
    ``interval`` and evaluating the repo's rules with every duration multiplied by ``factor``."""

    def __init__(self, workdir: Path, targets: list[str], *, interval: str = "1s", factor: float = 1 / 60,
                 min_range: str = "5s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: ./dev test installs Debian's prometheus package")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        scale = scale_rules_module()
        rules = workdir / "segstream.rules.yml"
        rules.write_text(scale.scale_text((PROM_DIR / "segstream.rules.yml").read_text(), factor,
                                          scale.parse_duration(min_range)))
        cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        cfg["global"]["scrape_interval"] = interval
        cfg["global"]["evaluation_interval"] = interval
        cfg["scrape_configs"][0]["static_configs"][0]["targets"] = targets
        cfg["rule_files"] = [str(rules)]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "prometheus.log", "wb"))
        wait_for(lambda: self._ready(), timeout_s, "prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, (self.workdir / "prometheus.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, q: str) -> list[dict]:
        return self.api("query", query=q)["result"]

    def alerts(self, name: str, instance: str | None = None) -> list[dict]:
        """Active (pending or firing) alerts called ``name``, of ``instance`` if given."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name
                and (instance is None or a["labels"].get("instance") == instance)]

    def firing(self, name: str, instance: str | None = None) -> bool:
        return any(a["state"] == "firing" for a in self.alerts(name, instance))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of the Grafana dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def wait_for(ok: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
