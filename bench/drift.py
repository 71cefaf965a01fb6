"""Drift alarms on planted logs: false alarms on stationary logs and detection delay after an abrupt drift.

    python -m bench.drift --out docs/bench/drift.json

Each seed gives two logs like the alerting end-to-end test's (1,500 users, 4 groups, 60,000 events over
14 days, 12 h half-life): one stationary, one whose 4 groups all drift abruptly at 60 % of the span.
Both go through the pipeline and the metrics as ``segstream run`` feeds them (no broker), in batches
of each ``--batch-sizes``, with a grace period of 10,000 events. Per run: the event counts at which a
drift alarm counted (any signal), the alarms before the drift (every alarm of a stationary log is
false), and the events from the drift to the first alarm after it.

Only public names of the pipeline and the metrics are used, so the same file measures an older
checkout too (``PYTHONPATH=<checkout> python bench/drift.py --label ...``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from bench.output import command_line, write_result

GRACE_EVENTS = 10_000


def replay(seed: int, drift: bool, batch: int) -> dict[str, Any]:
    from eventlogs.synthetic import SyntheticConfig, generate
    from stream.observability.drift import DriftMonitor
    from stream.observability.metrics import Metrics
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    cfg = SyntheticConfig(users=1500, groups=4, events=60_000, noise=0.05, seed=seed,
                          drift_at=0.6 if drift else None, drift_groups=4 if drift else 0)
    events = list(generate(cfg))
    settings = Settings(warmup_users=200, batch_max_events=batch, half_life_s=43_200.0,
                        drift_grace_batches=max(1, GRACE_EVENTS // batch))
    pipeline = Pipeline.from_settings(settings, now=lambda: float("inf"))
    metrics = Metrics(drift=DriftMonitor.from_settings(settings))
    alarms: list[list[Any]] = []
    versions, drift_at = 0, None
    for i in range(0, len(events), batch):
        chunk = events[i: i + batch]
        if drift and drift_at is None and chunk[-1]["ts"] >= cfg.drift_ts:
            drift_at = i + next(j for j, e in enumerate(chunk) if e["ts"] >= cfg.drift_ts)
        before = dict(metrics.drift.alarms_total)
        result = pipeline.process_objects(chunk)
        metrics.observe_batch(result, pipeline, records=len(chunk), value_bytes=0, seconds=0.0)
        versions += result.new_model is not None
        alarms += [[i + len(chunk), s] for s, n in metrics.drift.alarms_total.items() if n > before.get(s, 0)]
    false = [a for a in alarms if drift_at is None or a[0] <= drift_at]
    after = [a[0] for a in alarms if drift_at is not None and a[0] > drift_at]
    return {"seed": seed, "drift": drift, "batch": batch, "model_versions": versions, "alarms": alarms,
            "drift_event": drift_at, "false_alarms": len(false),
            "delay_events": (after[0] - drift_at) if after else None}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    still = [r for r in runs if not r["drift"]]
    moved = [r for r in runs if r["drift"]]
    delays = [r["delay_events"] for r in moved if r["delay_events"] is not None]
    return {"seeds": len(still), "stationary_logs_with_alarm": sum(r["false_alarms"] > 0 for r in still),
            "stationary_alarms": sum(r["false_alarms"] for r in still),
            "drifting_logs_alarm_before_drift": sum(r["false_alarms"] > 0 for r in moved),
            "drifting_logs_detected": len(delays),
            "delay_events_min": min(delays, default=None), "delay_events_median": statistics.median(delays) if delays else None,
            "delay_events_max": max(delays, default=None)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--batch-sizes", default="500,2500")
    p.add_argument("--out", default="", help="also write the result (one JSON document) to this file")
    p.add_argument("--label", default="", help="what the figures are of (another version of the code, say)")
    p.add_argument("--command", default="", help="the command line to record with the figures")
    a = p.parse_args(argv)
    from bench.common import emit, note

    figures: dict[str, Any] = {"by_batch": []}
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        runs = []
        for seed in (int(s) for s in a.seeds.split(",")):
            for drift in (False, True):
                runs.append(replay(seed, drift, batch))
                note(json.dumps({k: v for k, v in runs[-1].items() if k != "alarms"}))
        figures["by_batch"].append({"batch": batch, **summary(runs), "runs": runs})
    out = emit("drift", figures, seeds=a.seeds, batch_sizes=a.batch_sizes, label=a.label)
    if a.out:
        write_result(a.out, out, a.command or command_line("bench.drift", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
