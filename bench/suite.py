"""The whole benchmark suite, each run in a fresh process, results collected in one file.

    python -m bench.suite --out docs/bench/suite.jsonl   # every figure of docs/performance.md
    python -m bench.suite --quick                       # small sizes, a minute or two (smoke run)

Runs :mod:`bench.throughput` (k = 8 and 64; file mode at 100k and 1M users,
broker mode at 100k users; the naive reference once), :mod:`bench.latency` (5k events/s),
:mod:`bench.memory` (100k and 1M users), :mod:`bench.checkpoint` and :mod:`bench.produce`. Each child prints one JSON object;
they are appended to ``--out`` (default ``runs/bench/suite-<time>.jsonl``; an existing
file is replaced) and summarised as one JSON object on stdout, with the goals checked
(``"met"``). ``python -m bench.report --update docs/performance.md docs/scaling.md``
re-renders the docs' tables from the committed file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, emit, note


def _plan(quick: bool) -> list[tuple[str, list[str]]]:
    if quick:
        return [
            ("throughput k=8 20k users", ["bench.throughput", "--users", "20000", "--events", "100000",
                                         "--segments", "8", "--modes", "file,naive,broker", "--naive-events", "5000"]),
            ("latency", ["bench.latency", "--seconds", "10"]),
            ("memory", ["bench.memory", "--users", "50000"]),
        ]
    return [
        ("throughput k=8 100k users", ["bench.throughput", "--users", "100000", "--events", "1000000",
                                       "--segments", "8", "--modes", "file,naive,broker", "--naive-events", "30000"]),
        ("throughput k=64 100k users", ["bench.throughput", "--users", "100000", "--events", "1000000",
                                        "--segments", "64", "--modes", "file,broker"]),
        ("throughput k=8 1M users", ["bench.throughput", "--users", "1000000", "--events", "3000000",
                                     "--segments", "8", "--modes", "file"]),
        ("throughput k=64 1M users", ["bench.throughput", "--users", "1000000", "--events", "3000000",
                                      "--segments", "64", "--modes", "file"]),
        ("latency 5k/s", ["bench.latency", "--rate", "5000", "--seconds", "30"]),
        ("memory", ["bench.memory", "--users", "100000,1000000"]),
        ("checkpoint", ["bench.checkpoint", "--users", "100000,1000000"]),
        ("produce", ["bench.produce", "--events", "100000"]),
    ]


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals, checked on the figures of this run (docs/performance.md shows them)."""
    out: dict[str, Any] = {}
    for r in results:
        f, p = r.get("figures", {}), r.get("params", {})
        if r.get("bench") == "throughput":
            tag = f"k{p['segments']}_u{p['users']}"
            if "file" in f:
                out[f"file_events_per_s_{tag}"] = {"value": f["file"]["events_per_s"], "goal": ">= 100000",
                                                   "met": f["file"]["events_per_s"] >= 100_000}
            if "broker" in f:
                out[f"broker_ratio_{tag}"] = {"value": f["broker"]["ratio"], "goal": ">= 0.8",
                                              "met": f["broker"]["ratio"] >= 0.8}
            if "file_over_naive" in f:
                out[f"file_over_naive_{tag}"] = {"value": f["file_over_naive"], "goal": ">= 10",
                                                 "met": f["file_over_naive"] >= 10}
        elif r.get("bench") == "latency":
            p99 = f["latency_ms"]["p99"]
            out["latency_p99_ms"] = {"value": p99, "goal": "<= 250", "met": p99 <= 250}
        elif r.get("bench") == "memory":
            for size, fig in f.items():
                b = fig.get("bytes_per_user") if isinstance(fig, dict) else None
                if b is not None and str(size).replace("_", "").isdigit() and int(size) >= 1_000_000:
                    out[f"memory_bytes_per_user_{size}"] = {"value": b, "goal": "<= 400", "met": b <= 400}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="comma-separated substrings of run names to keep")
    p.add_argument("--out", default="", help="results file (JSON lines; default runs/bench/suite-<time>.jsonl)")
    a = p.parse_args(argv)
    plan = _plan(a.quick)
    if a.only:
        plan = [(n, c) for n, c in plan if any(s in n for s in a.only.split(","))]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = Path(a.out) if a.out else CACHE / f"suite-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    results: list[dict[str, Any]] = []
    for name, cmd in plan:
        note(f"== {name}: python -m {' '.join(cmd)}")
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", *cmd], stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            note(f"!! {name} failed (exit {proc.returncode})")
            results.append({"bench": name, "error": proc.returncode})
            continue
        for ln in lines:
            r = json.loads(ln)
            if "bench" not in r:
                continue
            r["run"], r["command"] = name, "python -m " + " ".join(cmd)
            r["wall_s"] = round(time.monotonic() - t, 1)
            results.append(r)
            with open(path, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    emit("suite", {"targets": _targets(results), "runs": len(results), "results_file": str(path)}, quick=a.quick)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
