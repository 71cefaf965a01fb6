"""The state changelog: restore rate, bytes per user, and the run loop's throughput with and without it.

    python -m bench.changelog --users 100000,300000 --events 400000 --throughput-users 50000

``restore``: for each user count, a pipeline holding that many users (synthetic state rows, spread
over ``--partitions`` partitions) writes one checkpoint of every user into a fresh changelog topic of
the embedded broker; then a fresh pipeline restores them the way ``segstream run`` does on
assignment (read each changelog partition from offset 0 to the end, last record per key, load the
rows). ``users_per_s`` = users / (read + load) seconds; ``bytes_per_user`` = key + value bytes
written / users. ``throughput``: one synthetic log produced into the embedded broker, consumed by
``segstream run``'s loop six times in the same process, changelog off or on (each with its own group),
in alternating order (off, on, on, off, off, on); the medians of the three runs each are compared.
Events/s counted from the end of the first batch to the end of the run's last checkpoint (outputs and
changelog confirmed, offsets committed: a run with the changelog is not done before its last rows are
written); each run also reports the CPU it
took per event, of this process and of the broker (a busy machine moves those less than the rate).
Once per ``--checkpoint-shares`` entry (``SEGSTREAM_CHECKPOINT_SHARE``; 1: a checkpoint per micro-batch)
and ``--batch-sizes`` entry: with small batches few ring slots change per checkpoint.
Runs with the changelog also report the bytes per checkpoint, all records and the model's alone, and
what the model would take written whole at every checkpoint (core and every chunk: the record as it
was before the model went incremental).
The raw encoder (no trained model) keeps the encoder's share small, which makes the changelog's
share of the time as large as it gets.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
import uuid
from typing import Any

import numpy as np

from bench.common import cpu_seconds, emit, note, synthetic_log
from bench.output import command_line, write_result


def _filled(settings: Any, users: int, partitions: int, seed: int = 0) -> Any:
    """A pipeline holding ``users`` users with random state rows (segments assigned, seq > 0)."""
    from stream.runtime.pipeline import Pipeline

    p = Pipeline.from_settings(settings)
    store = p.store
    spec = store.spec
    rng = np.random.default_rng(seed)
    block = {"ids": [f"user-{i:08d}" for i in range(users)], "rows": np.arange(users), "t0": 1.7e9,
             "dense": rng.random((users, spec.dense_width), dtype=np.float32),
             "last_ts": 1.7e9 + rng.random(users) * 86400,
             "items": rng.integers(-1, 5000, (users, spec.item_history), dtype=np.int32),
             "item_w": rng.random((users, spec.item_history), dtype=np.float32),
             "item_head": rng.integers(0, spec.item_history, users).astype(np.uint8),
             "segment": rng.integers(0, 8, users).astype(np.int32), "seq": rng.integers(1, 20, users).astype(np.uint32),
             "distance": rng.random(users, dtype=np.float32),
             "partition": (np.arange(users) % partitions).astype(np.int32)}
    store.import_rows(block)
    return p


def restore_rate(bootstrap: str, users: int, partitions: int) -> dict[str, Any]:
    from stream.kafka import Publisher, ensure_topics, make_producer
    from stream.kafka.partition_reader import read_partitions
    from stream.runtime.changelog import Changelog, decode_partition
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    s = Settings(bootstrap=bootstrap, max_users=users * 2)
    topic = f"changelog-{uuid.uuid4().hex[:6]}"
    ensure_topics(s, {topic: partitions}, configs={topic: {"cleanup.policy": "compact"}})
    src = _filled(s, users, partitions)
    producer = make_producer(s)
    try:
        cl = Changelog(topic, Publisher(producer), src)
        cl.mark(src.store.live_rows())
        t = time.perf_counter()
        cl.write({p: 0 for p in range(partitions)})
        cl.publisher.confirm()
        write_s = time.perf_counter() - t
    finally:
        producer.close(timeout=10)
    written = cl.bytes_written
    del src
    gc.collect()
    dst = Pipeline.from_settings(s)
    target = Changelog(topic, None, dst)  # type: ignore[arg-type]
    t = time.perf_counter()
    records, ends = read_partitions(s, topic, list(range(partitions)))
    read_s = time.perf_counter() - t
    states = [decode_partition(p, records[p], ends[p], target.dtype) for p in range(partitions)]
    restored = target.restore(states)
    dst.finish_restore(None)
    total_s = time.perf_counter() - t
    assert restored == users == len(dst.store), (restored, users, len(dst.store))
    return {"users": users, "partitions": partitions, "write_seconds": round(write_s, 3),
            "restore_seconds": round(total_s, 3), "read_seconds": round(read_s, 3),
            "users_per_s": round(users / total_s), "bytes_per_user": round(written / users, 1),
            "changelog_bytes": written}


def run_rate(bootstrap: str, topic: str, expect: int, users: int, *, changelog: bool,
             batch_max_events: int, checkpoint_share: float, checkpoint_max_gap_ms: int,
             broker_pid: int = 0) -> dict[str, Any]:
    from stream.runtime.app import run_consumer
    from stream.settings import Settings

    marks: list[tuple[float, int]] = []
    runners: list[Any] = []
    tag = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=bootstrap, input_topic=topic, output_topic=f"{topic}-segments-{tag}",
                        dlq_topic=f"{topic}-dlq", lineage_topic=f"{topic}-lineage-{tag}",
                        profiles_topic=f"{topic}-profiles-{tag}", group_id=f"bench-{tag}", metrics_port=0,
                        max_users=users * 2, changelog=changelog, batch_max_events=batch_max_events, checkpoint_share=checkpoint_share,
                        checkpoint_max_gap_ms=checkpoint_max_gap_ms)
    checkpoints: list[tuple[float, int]] = []

    def ready(runner: Any) -> None:
        # the run's last checkpoint (its outputs and changelog confirmed, offsets committed) comes after the
        # last batch: the run ends there, whether it writes the changelog or not
        runners.append(runner)
        plain = runner.checkpoint

        def timed(*args: Any, **kwargs: Any) -> None:
            plain(*args, **kwargs)
            checkpoints.append((time.perf_counter(), runner.summary.events))

        runner.checkpoint = timed

    me = os.getpid()
    cpu0, bcpu0 = cpu_seconds(me, reaped=True), cpu_seconds(broker_pid) if broker_pid else 0.0
    summary = run_consumer(settings, max_events=expect, idle_exit_s=30, stop=threading.Event(), on_ready=ready,
                           on_batch=lambda result, s: marks.append((time.perf_counter(), s.events)))
    cpu1, bcpu1 = cpu_seconds(me, reaped=True), cpu_seconds(broker_pid) if broker_pid else 0.0
    (t0, n0), (t1, n1) = marks[0], max(marks[-1], checkpoints[-1] if checkpoints else marks[-1])
    out = {"changelog": changelog, "events": summary.events, "seconds": round(t1 - t0, 3),
           "events_per_s": round((n1 - n0) / (t1 - t0)), "batches": summary.batches,
           # CPU of the whole run (start-up and group join too), which a busy machine changes less than the rate
           "cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / max(1, summary.events), 2)}
    if broker_pid:
        out["broker_cpu_us_per_event"] = round(1e6 * (bcpu1 - bcpu0) / max(1, summary.events), 2)
    cl = runners[0].changelog
    if cl is not None:
        # (getattr: the same script measures versions of the code whose changelog counts less)
        n = getattr(cl, "checkpoints", 0) or summary.batches
        out.update(checkpoints=n, bytes_per_checkpoint=round(cl.bytes_written / n))
        if hasattr(cl, "model_bytes_written"):
            out.update(model_bytes_per_checkpoint=round(cl.model_bytes_written / n),
                       whole_model_bytes_per_checkpoint=round(cl.model_bytes_full / n))
    return out


def throughput(bootstrap: str, users: int, events: int, batch_max_events: int,
               checkpoint_share: float, checkpoint_max_gap_ms: int, broker_pid: int = 0) -> dict[str, Any]:
    """The loop's events/s with and without the changelog: three runs each, interleaved, medians compared."""
    from stream.cli.producer import produce_log
    from stream.kafka import ensure_topics
    from stream.settings import Settings

    log = synthetic_log(users, events)
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    s = Settings(bootstrap=bootstrap, input_topic=topic)
    ensure_topics(s, {topic: 1})
    produced = produce_log(s, log, topic)
    runs = []
    for on in (False, True, True, False, False, True):
        gc.collect()
        runs.append(run_rate(bootstrap, topic, produced, users, changelog=on, batch_max_events=batch_max_events,
                             checkpoint_share=checkpoint_share, checkpoint_max_gap_ms=checkpoint_max_gap_ms,
                             broker_pid=broker_pid))
        note(f"run {runs[-1]}")
    off = np.median([r["events_per_s"] for r in runs if not r["changelog"]])
    on = np.median([r["events_per_s"] for r in runs if r["changelog"]])
    with_cl = [r for r in runs if r["changelog"]]
    cpu = {f"{k}_{'with' if flag else 'without'}_changelog": round(float(np.median([r[k] for r in runs if r["changelog"] == flag])), 2)
           for k in ("cpu_us_per_event", "broker_cpu_us_per_event") if k in runs[0] for flag in (False, True)}
    per_ck = {k: round(float(np.median([r[k] for r in with_cl]))) for k in
              ("bytes_per_checkpoint", "model_bytes_per_checkpoint", "whole_model_bytes_per_checkpoint") if k in with_cl[0]}
    return {"users": users, "events": produced, "batch_max_events": batch_max_events,
            "checkpoint_share": checkpoint_share, "checkpoint_max_gap_ms": checkpoint_max_gap_ms, "runs": runs,
            "without_changelog_events_per_s": round(off), "with_changelog_events_per_s": round(on),
            "ratio": round(on / off, 3), **cpu, **per_ck}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="100000,300000", help="user counts of the restore figures")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--events", type=int, default=400_000)
    p.add_argument("--throughput-users", type=int, default=50_000)
    p.add_argument("--batch-sizes", default="5000,500", help="SEGSTREAM_BATCH_MAX_EVENTS of the throughput runs")
    p.add_argument("--checkpoint-shares", default="",
                   help="SEGSTREAM_CHECKPOINT_SHARE of the throughput runs, comma-separated (default: the setting's default)")
    p.add_argument("--checkpoint-max-gap-ms", type=int, default=None,
                   help="SEGSTREAM_CHECKPOINT_MAX_GAP_MS of the throughput runs (default: the setting's default)")
    p.add_argument("--out", default="", help="also write the result (one JSON document) to this file")
    p.add_argument("--label", default="", help="what the figures are of (another version of the code, say)")
    p.add_argument("--command", default="", help="the command line to record with the figures")
    a = p.parse_args(argv)
    from stream.kafka.embedded_broker import EmbeddedBroker
    from stream.runtime.pipeline import tune_process
    from stream.settings import Settings

    tune_process(Settings())
    figures: dict[str, Any] = {"restore": []}
    gap = Settings().checkpoint_max_gap_ms if a.checkpoint_max_gap_ms is None else a.checkpoint_max_gap_ms
    with EmbeddedBroker() as broker:
        for n in (int(x) for x in a.users.split(",") if x):
            figures["restore"].append(restore_rate(broker.bootstrap, n, a.partitions))
            note(f"restore {figures['restore'][-1]}")
            gc.collect()
        if a.events:
            shares = [float(x) for x in a.checkpoint_shares.split(",") if x] or [Settings().checkpoint_share]
            figures["throughput"] = [throughput(broker.bootstrap, a.throughput_users, a.events, int(b), share, gap,
                                                broker.proc.pid if broker.proc else 0)
                                     for share in shares for b in a.batch_sizes.split(",")]
    out = emit("changelog", figures, users=a.users, partitions=a.partitions, events=a.events,
               throughput_users=a.throughput_users, batch_sizes=a.batch_sizes, checkpoint_shares=a.checkpoint_shares,
               checkpoint_max_gap_ms=gap, encoder="raw", label=a.label)
    if a.out:
        write_result(a.out, out, a.command or command_line("bench.changelog", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
