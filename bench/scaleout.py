"""Scale-out: one vs several ``segstream run`` processes in one consumer group.

    python -m bench.scaleout --instances 1,2 --partitions 6 --events 1500000
    python -m bench.scaleout --out docs/bench/scaleout.jsonl   # also append the result (and its command) there

A synthetic log is produced into a ``--partitions`` topic of the embedded
broker. For each instance count, that many real ``segstream run`` processes
join one fresh group and consume the whole topic. The measured window starts
once the group is stable (every partition owned by exactly one instance,
read from each process's ``segstream_partition_assigned`` series) and
ends when ``--measure-s`` seconds have passed or the topic is drained.
Reported per run: wall-clock events/s of the group, and CPU seconds per
event (user + system time of the instances and their decode processes, from
``/proc``, over the same window). The broker shares the machine's cores with
the instances. Instances run without the decode process (one core each, the
unit of scale-out) unless ``--decode-process`` is given.

By default the instances share one segment model through the model topic
(``SEGSTREAM_GLOBAL_MODEL=true``), so the figures include the
coordination cost (summaries, merges, model reads); ``--local-models`` runs
each instance with its own model instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.common import bench_encoder, cpu_seconds, emit, note, scrape_samples, synthetic_log
from bench.output import append_result, command_line

def _scrape(port: int) -> tuple[float, set[int]]:
    """(events consumed, partitions this instance owns) from its /metrics."""
    consumed, owned = 0.0, set()
    for s in scrape_samples(port):
        if s.name == "segstream_events_consumed_total":
            consumed = s.value
        elif s.name == "segstream_partition_assigned":
            owned.add(int(s.labels["partition"]))
    return consumed, owned


def run_group(bootstrap: str, topic: str, produced: int, instances: int, partitions: int, encoder: str,
              segments: int, measure_s: float, global_model: bool = True, decode_process: bool = False) -> dict[str, Any]:
    from stream.kafka.embedded_broker import free_port

    group = f"scale-{uuid.uuid4().hex[:6]}"
    procs, ports = [], []
    for i in range(instances):
        port = free_port()
        env = {**os.environ, "SEGSTREAM_BOOTSTRAP": bootstrap, "SEGSTREAM_INPUT_TOPIC": topic,
               "SEGSTREAM_OUTPUT_TOPIC": f"{topic}-seg-{group}", "SEGSTREAM_DLQ_TOPIC": f"{topic}-dlq-{group}",
               "SEGSTREAM_GROUP_ID": group, "SEGSTREAM_ENCODER": encoder, "SEGSTREAM_SEGMENTS": str(segments),
               "SEGSTREAM_METRICS_PORT": str(port), "SEGSTREAM_LOG_LEVEL": "WARNING",
               "SEGSTREAM_GLOBAL_MODEL": "true" if global_model else "false", "SEGSTREAM_MODEL_TOPIC": f"{topic}-model-{group}",
               "SEGSTREAM_DECODE_PROCESS": "true" if decode_process else "false"}
        procs.append(subprocess.Popen([sys.executable, "-m", "stream.cli", "run"], env=env, stdout=subprocess.DEVNULL))
        ports.append(port)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # wait for a stable group: each partition owned once
            try:
                views = [_scrape(p) for p in ports]
            except OSError:
                time.sleep(0.5)
                continue
            owned = [o for _, o in views]
            union = set().union(*owned)
            if len(union) == partitions and sum(len(o) for o in owned) == partitions and all(owned):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the group did not settle within 180 s")
        c0 = sum(v for v, _ in views)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.monotonic()
        while time.monotonic() - t0 < measure_s:
            time.sleep(1.0)
            consumed = sum(_scrape(p)[0] for p in ports)
            if consumed >= produced:
                break
        t1 = time.monotonic()
        cpu1 = sum(cpu_seconds(p.pid) for p in procs)
        c1 = sum(_scrape(p)[0] for p in ports)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    events = c1 - c0
    return {"instances": instances, "events": int(events), "seconds": round(t1 - t0, 2),
            "events_per_s": round(events / (t1 - t0)), "cpu_seconds": round(cpu1 - cpu0, 2),
            "cpu_us_per_event": round((cpu1 - cpu0) / max(events, 1) * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", default="1,2")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--measure-s", type=float, default=20.0)
    p.add_argument("--local-models", action="store_true", help="each instance learns its own model (no model topic)")
    p.add_argument("--decode-process", action="store_true",
                   help="instances decode in a child process (SEGSTREAM_DECODE_PROCESS; off by default here: "
                        "each instance then uses one core, the unit of scale-out)")
    p.add_argument("--out", default="", help="also append the result, with its command, to this JSON-lines file")
    a = p.parse_args(argv)

    from stream.kafka.embedded_broker import EmbeddedBroker
    from stream.kafka.clients import ensure_topics
    from stream.cli.producer import produce_log
    from stream.settings import Settings

    log = synthetic_log(a.users, a.events)
    encoder = str(bench_encoder(synthetic_log(20_000, 200_000)))
    runs = []
    with EmbeddedBroker() as broker:
        topic = f"scale-{uuid.uuid4().hex[:6]}"
        s = Settings(bootstrap=broker.bootstrap)
        ensure_topics(s, {topic: a.partitions})
        produced = produce_log(s, log, topic)
        note(f"produced {produced:,} events into {a.partitions} partitions")
        for n in [int(x) for x in a.instances.split(",")]:
            r = run_group(broker.bootstrap, topic, produced, n, a.partitions, encoder, a.segments, a.measure_s,
                          global_model=not a.local_models, decode_process=a.decode_process)
            note(f"{n} instance(s): {r}")
            runs.append(r)
    figures: dict[str, Any] = {"runs": runs}
    if len(runs) >= 2:
        one, two = runs[0], runs[1]
        figures["cpu_per_event_ratio"] = round(two["cpu_us_per_event"] / one["cpu_us_per_event"], 3)
        figures["wall_speedup"] = round(two["events_per_s"] / one["events_per_s"], 3)
    result = emit("scaleout", figures, partitions=a.partitions, users=a.users, events=a.events, segments=a.segments,
                  measure_s=a.measure_s, global_model=not a.local_models, decode_process=a.decode_process)
    if a.out:
        append_result(a.out, result, command_line("bench.scaleout", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
