"""End-to-end throughput: recorded log without a broker, and through the embedded broker.

    python -m bench.throughput --users 100000 --events 1000000 --segments 8 --modes file,broker

``naive``: the reference in :mod:`bench.naive` (one event at a time) on the
first ``--naive-events`` events of the same log. ``file``: the log replayed straight into the pipeline (``segstream replay``'s
code path; reading and msgpack decoding included). ``broker``: the log is
produced into a topic of the embedded broker, then, in the same run, (1) a
plain kafka-python consumer reads the topic with no processing (the client's
own ceiling: kafka-python's record-at-a-time decoding; once more under Python's default gc
thresholds, ``raw_consume_python_gc``, as a plain kafka-python application runs), (2) the same consumer with segstream's
columnar batch decoder (:mod:`stream.kafka.records`) and no processing, and (3) ``segstream run``'s consumer loop
processes it. Rates
count records after each consumer's first non-empty poll, so the group join
(a few seconds) is excluded from both sides equally. ``ratio`` =
pipeline / raw. Every mode runs under the process settings ``segstream run``
applies (:func:`stream.runtime.pipeline.tune_process`: thread caps and the gc
threshold, which alone moves kafka-python's raw consume rate by ~20%), set
before the first mode, and after a full collection, so the figures do not
depend on which modes ran before in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import bench_encoder, emit, note, synthetic_log


def _settings(encoder: Path, segments: int, users: int, **kw: Any):
    from stream.settings import Settings

    return Settings(encoder=str(encoder), segments=segments, max_users=max(users * 2, 1000), metrics_port=0, **kw)


def file_rate(log: Path, encoder: Path, segments: int, users: int) -> dict[str, Any]:
    from stream.runtime.replay import replay_log

    s = replay_log(_settings(encoder, segments, users), log, clock="event")
    return {"events": s.events, "seconds": round(s.seconds, 3), "events_per_s": round(s.events_per_second),
            "segment_changes": s.changes, "batches": s.batches}


PYTHON_GC = gc.get_threshold()  # before tune_process: what a plain kafka-python application runs with


@contextlib.contextmanager
def gc_thresholds(thresholds: tuple[int, ...]) -> Iterator[None]:
    tuned = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*tuned)


def raw_consume_rate(bootstrap: str, topic: str, expect: int, *, columnar: bool = False) -> dict[str, Any]:
    """Records/s of a consumer that does nothing with them; ``columnar``: with segstream's batch decoder."""
    from stream.kafka.clients import make_consumer
    from stream.kafka.compat import install_columnar_fetch
    from stream.settings import Settings

    # the same client configuration as segstream's own consumer
    c = make_consumer(Settings(bootstrap=bootstrap), topic, group_id=f"raw-{uuid.uuid4().hex[:8]}")
    if columnar and not install_columnar_fetch(c):
        raise RuntimeError("the columnar decoder could not be installed")
    n = first = 0
    t_first = None
    try:
        deadline = time.monotonic() + 600
        while n < expect and time.monotonic() < deadline:
            polled = c.poll(timeout_ms=200, max_records=5000)
            got = sum(len(x) for v in polled.values() for x in v) if columnar else sum(len(v) for v in polled.values())
            if got and t_first is None:
                t_first, first = time.perf_counter(), got
            n += got
        t_end = time.perf_counter()
    finally:
        c.close(autocommit=False)
    secs = t_end - t_first
    return {"events": n, "seconds": round(secs, 3), "events_per_s": round((n - first) / secs)}


def pipeline_consume_rate(bootstrap: str, topic: str, expect: int, encoder: Path, segments: int,
                          users: int) -> dict[str, Any]:
    from stream.runtime.app import run_consumer

    marks: list[tuple[float, int]] = []

    def on_batch(result, summary) -> None:
        marks.append((time.perf_counter(), summary.events))

    settings = _settings(encoder, segments, users, bootstrap=bootstrap, input_topic=topic,
                         output_topic=f"{topic}-segments", dlq_topic=f"{topic}-dlq",
                         group_id=f"bench-{uuid.uuid4().hex[:8]}")
    summary = run_consumer(settings, max_events=expect, idle_exit_s=30, on_batch=on_batch, stop=threading.Event())
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return {"events": summary.events, "seconds": round(t1 - t0, 3), "events_per_s": round((n1 - n0) / (t1 - t0)),
            "segment_changes": summary.changes, "batches": summary.batches}


def broker_rates(log: Path, events: int, encoder: Path, segments: int, users: int,
                 partitions: int) -> dict[str, Any]:
    from stream.kafka.embedded_broker import EmbeddedBroker
    from stream.kafka.clients import ensure_topics
    from stream.cli.producer import produce_log
    from stream.settings import Settings

    with EmbeddedBroker() as broker:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        s = Settings(bootstrap=broker.bootstrap, input_topic=topic)
        ensure_topics(s, {topic: partitions})
        t = time.perf_counter()
        produced = produce_log(s, log, topic)
        produce_s = time.perf_counter() - t
        note(f"produced {produced:,} in {produce_s:.1f}s")
        with gc_thresholds(PYTHON_GC):
            raw_python_gc = raw_consume_rate(broker.bootstrap, topic, produced)
        note(f"raw consume, Python's default gc thresholds {raw_python_gc}")
        raw = raw_consume_rate(broker.bootstrap, topic, produced)
        note(f"raw consume {raw}")
        raw_col = raw_consume_rate(broker.bootstrap, topic, produced, columnar=True)
        note(f"raw consume, columnar decoder {raw_col}")
        pipe = pipeline_consume_rate(broker.bootstrap, topic, produced, encoder, segments, users)
        note(f"pipeline {pipe}")
    return {"produced": produced, "produce_events_per_s": round(produced / produce_s), "raw_consume": raw,
            "raw_consume_python_gc": raw_python_gc, "raw_consume_columnar": raw_col, "pipeline": pipe,
            "ratio_to_python_gc": round(pipe["events_per_s"] / raw_python_gc["events_per_s"], 3),
            "ratio": round(pipe["events_per_s"] / raw["events_per_s"], 3),
            "ratio_to_columnar": round(pipe["events_per_s"] / raw_col["events_per_s"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--modes", default="file,naive,broker")
    p.add_argument("--naive-events", type=int, default=50_000, help="events the naive reference runs (it is slow)")
    a = p.parse_args(argv)
    log = synthetic_log(a.users, a.events)
    encoder = bench_encoder(synthetic_log(20_000, 200_000), a.dim)
    figures: dict[str, Any] = {}
    modes = a.modes.split(",")
    from stream.runtime.pipeline import tune_process
    from stream.settings import Settings

    tune_process(Settings())
    if "file" in modes:
        figures["file"] = file_rate(log, encoder, a.segments, a.users)
        note(f"file {figures['file']}")
    if "naive" in modes:
        gc.collect()
        from bench.naive import naive_rate

        figures["naive"] = naive_rate(log, encoder, a.segments, a.users, a.naive_events)
        note(f"naive {figures['naive']}")
        if "file" in figures:
            figures["file_over_naive"] = round(figures["file"]["events_per_s"] / figures["naive"]["events_per_s"], 1)
    if "broker" in modes:
        gc.collect()
        figures["broker"] = broker_rates(log, a.events, encoder, a.segments, a.users, a.partitions)
    emit("throughput", figures, users=a.users, events=a.events, segments=a.segments, dim=a.dim,
         partitions=a.partitions, log=log.name, encoder=encoder.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
