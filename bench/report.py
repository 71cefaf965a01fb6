"""README's performance table from a suite results file (every figure from one run).

    python -m bench.report runs/bench/suite-<time>.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _rows(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in results:
        f, p, cmd = r.get("figures", {}), r.get("params", {}), f"`{r.get('command', '')}`"
        if r.get("bench") == "throughput":
            size = f"k={p['segments']}, {p['users']:,} users, {p['events']:,} events, {p['dim']} dims"
            if "file" in f:
                rows.append(("log file → pipeline (no broker)", size, f"{f['file']['events_per_s']:,} events/s", cmd))
            if "naive" in f:
                rows.append(("naive per-event reference", size + f", first {f['naive']['events']:,} events",
                             f"{f['naive']['events_per_s']:,} events/s (pipeline: {f.get('file_over_naive', '?')}×)", cmd))
            if "broker" in f:
                b = f["broker"]
                if "raw_consume_python_gc" in b:
                    rows.append(("embedded broker: raw kafka-python consume, Python's default gc", size,
                                 f"{b['raw_consume_python_gc']['events_per_s']:,} events/s", cmd))
                rows.append(("embedded broker: raw kafka-python consume" +
                             (", segstream's gc threshold" if "raw_consume_python_gc" in b else ""), size,
                             f"{b['raw_consume']['events_per_s']:,} events/s", cmd))
                if "raw_consume_columnar" in b:
                    rows.append(("embedded broker: same consumer, segstream's columnar decoder, no processing", size,
                                 f"{b['raw_consume_columnar']['events_per_s']:,} events/s", cmd))
                rows.append(("embedded broker: `segstream run` loop", size,
                             f"{b['pipeline']['events_per_s']:,} events/s (ratio {b['ratio']}"
                             + (f", {b['ratio_to_python_gc']} to the default-gc consume" if "ratio_to_python_gc" in b else "")
                             + "; "
                             f"{b['pipeline']['segment_changes']:,} segment events published)", cmd))
        elif r.get("bench") == "produce":
            for name, label in (("send_per_record", "kafka-python `send` per record"),
                                ("record_batches", "whole record batches (`stream/kafka/batch_produce.py`)")):
                g = f[name]
                rows.append((f"publish + confirm segment events: {label}",
                             f"{g['records']:,} events, {p['batch']:,} per confirm, {p['partitions']} partitions",
                             f"{g['records_per_s']:,} records/s ({g['us_per_record']} µs each)", cmd))
        elif r.get("bench") == "latency":
            lat = f["latency_ms"]
            rows.append(("event-to-publish latency", f"{f['offered_events_per_s']:,} events/s offered, "
                         f"batch wait ≤ {p['batch_max_wait_ms']} ms, {p['seconds']:.0f} s",
                         f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms", cmd))
        elif r.get("bench") == "memory":
            for size, m in f.items():
                rows.append(("resident memory per tracked user", f"{int(size):,} users",
                             f"{m['bytes_per_user']} B (state columns {m['state_columns_bytes_per_user']} B)", cmd))
        elif r.get("bench") == "checkpoint":
            rows.append(("checkpoint snapshot write / restore", f"{p['users']:,} users, {p['partitions']} partitions",
                         f"{f['write_seconds']} s / {f['restore_seconds']} s, {f['bytes_per_user']} B/user on disk", cmd))
        elif r.get("bench") == "scaleout":
            for run in f.get("runs", []):
                rows.append((f"{run['instances']} instance(s), {p['partitions']} partitions", f"{p['users']:,} users",
                             f"{run['events_per_s']:,} events/s, {run['cpu_us_per_event']} CPU µs/event", cmd))
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = [json.loads(line) for line in open(argv[0]) if line.strip()]
    m = results[0]["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
          f"torch {m['versions']['torch']}, kafka-python {m['versions']['kafka-python']}; "
          f"run {results[0]['at']} (load average at start {m['loadavg_at_start'][0]}).\n")
    print("| Measure | Workload | Result | Command |\n|---|---|---|---|")
    for row in _rows(results):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
