"""The two Kafka clients side by side on one topic: raw consume rates, and ``segstream run`` on each.

    python -m bench.transports --events 1000000 --users 100000

One topic of the embedded broker (Tansu) holds the synthetic log; in one run,
each mode reads all of it with a fresh consumer group:

- ``kafka_python_raw``: kafka-python's poll loop, nothing done with the records
  (segstream's consumer configuration, kafka-python's own record decoding);
- ``kafka_python_raw_decode``: the same, plus ``msgpack.unpackb`` of every value;
- ``confluent_raw`` / ``confluent_raw_decode``: librdkafka's ``consume(5000)``
  loop, without and with ``msgpack.unpackb`` of every value;
- ``segstream_kafka_python`` / ``segstream_confluent``: ``segstream run``'s
  consumer loop (in-process, defaults as ``segstream run``) on each client;
- ``file``: the same log replayed into the pipeline without any broker
  (``segstream replay``'s path): the pipeline's own ceiling, which no client
  can lift ``segstream run`` above.

Rates count records after each consumer's first non-empty poll (the group join
is left out on every side). The goals: ``segstream_confluent`` at least 0.85x
``confluent_raw_decode``; ``segstream_kafka_python`` at least 0.9x
``kafka_python_raw``. Every mode runs under :func:`stream.runtime.pipeline.tune_process`
(the gc threshold and thread caps ``segstream run`` sets).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import bench_encoder, emit, note, synthetic_log
from bench.throughput import _settings, file_rate

GOALS = {"confluent": 0.85, "kafka_python": 0.9}


def _rate(poll: Callable[[], int], expect: int) -> dict[str, Any]:
    n = first = 0
    t_first = None
    deadline = time.monotonic() + 600
    while n < expect and time.monotonic() < deadline:
        got = poll()
        if got and t_first is None:
            t_first, first = time.perf_counter(), got
        n += got
    secs = time.perf_counter() - t_first if t_first is not None else float("nan")
    return {"events": n, "seconds": round(secs, 3), "events_per_s": round((n - first) / secs)}


def kafka_python_raw(bootstrap: str, topic: str, expect: int, *, decode: bool) -> dict[str, Any]:
    import msgpack

    from stream.kafka.clients import make_consumer
    from stream.settings import Settings

    c = make_consumer(Settings(bootstrap=bootstrap), topic, group_id=f"raw-{uuid.uuid4().hex[:8]}")
    unpackb = msgpack.unpackb

    def poll() -> int:
        polled = c.poll(timeout_ms=200, max_records=5000)
        if decode:
            for recs in polled.values():
                for r in recs:
                    unpackb(r.value)
        return sum(len(v) for v in polled.values())

    try:
        return _rate(poll, expect)
    finally:
        c.close(autocommit=False)


def confluent_raw(bootstrap: str, topic: str, expect: int, *, decode: bool) -> dict[str, Any]:
    import msgpack
    from confluent_kafka import Consumer

    from stream.kafka.confluent import consumer_config
    from stream.settings import Settings

    # the same client configuration as segstream's own librdkafka consumer
    c = Consumer(consumer_config(Settings(bootstrap=bootstrap), **{"group.id": f"raw-{uuid.uuid4().hex[:8]}"}))
    c.subscribe([topic])
    unpackb = msgpack.unpackb

    def poll() -> int:
        msgs = c.consume(num_messages=5000, timeout=0.2)
        if decode:
            for m in msgs:
                unpackb(m.value())
        return len(msgs)

    try:
        return _rate(poll, expect)
    finally:
        c.close()


def segstream_rate(bootstrap: str, topic: str, expect: int, encoder: Path, segments: int, users: int,
                   client: str) -> dict[str, Any]:
    from stream.runtime.app import run_consumer

    marks: list[tuple[float, int]] = []

    def on_batch(result, summary) -> None:
        marks.append((time.perf_counter(), summary.events))

    tag = uuid.uuid4().hex[:8]
    settings = _settings(encoder, segments, users, bootstrap=bootstrap, input_topic=topic,
                         output_topic=f"{topic}-segments-{tag}", dlq_topic=f"{topic}-dlq-{tag}",
                         group_id=f"bench-{tag}", kafka_client=client)
    summary = run_consumer(settings, max_events=expect, idle_exit_s=30, on_batch=on_batch, stop=threading.Event())
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return {"events": summary.events, "seconds": round(t1 - t0, 3), "events_per_s": round((n1 - n0) / (t1 - t0)),
            "segment_changes": summary.changes, "batches": summary.batches}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--dim", type=int, default=32)
    a = p.parse_args(argv)
    log = synthetic_log(a.users, a.events)
    encoder = bench_encoder(synthetic_log(20_000, 200_000), a.dim)
    from stream.cli.producer import produce_log
    from stream.kafka.clients import ensure_topics
    from stream.kafka.embedded_broker import EmbeddedBroker
    from stream.runtime.pipeline import tune_process
    from stream.settings import Settings

    tune_process(Settings())
    f: dict[str, Any] = {"file": file_rate(log, encoder, a.segments, a.users)}
    note(f"file {f['file']}")
    with EmbeddedBroker() as broker:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        s = Settings(bootstrap=broker.bootstrap, input_topic=topic)
        ensure_topics(s, {topic: 1})
        t = time.perf_counter()
        produced = produce_log(s, log, topic)
        note(f"produced {produced:,} in {time.perf_counter() - t:.1f}s")
        modes: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("kafka_python_raw", lambda: kafka_python_raw(broker.bootstrap, topic, produced, decode=False)),
            ("kafka_python_raw_decode", lambda: kafka_python_raw(broker.bootstrap, topic, produced, decode=True)),
            ("confluent_raw", lambda: confluent_raw(broker.bootstrap, topic, produced, decode=False)),
            ("confluent_raw_decode", lambda: confluent_raw(broker.bootstrap, topic, produced, decode=True)),
            ("segstream_kafka_python", lambda: segstream_rate(broker.bootstrap, topic, produced, encoder, a.segments,
                                                              a.users, "kafka-python")),
            ("segstream_confluent", lambda: segstream_rate(broker.bootstrap, topic, produced, encoder, a.segments,
                                                           a.users, "confluent")),
        ]
        for name, run in modes:
            gc.collect()
            f[name] = run()
            note(f"{name} {f[name]}")
    rate = {k: v["events_per_s"] for k, v in f.items()}
    f["ratios"] = {
        "segstream_confluent_to_confluent_raw_decode": round(rate["segstream_confluent"] / rate["confluent_raw_decode"], 3),
        "segstream_kafka_python_to_kafka_python_raw": round(rate["segstream_kafka_python"] / rate["kafka_python_raw"], 3),
        "segstream_confluent_to_segstream_kafka_python": round(rate["segstream_confluent"] / rate["segstream_kafka_python"], 3),
        "segstream_confluent_to_file": round(rate["segstream_confluent"] / rate["file"], 3),
        "segstream_kafka_python_to_file": round(rate["segstream_kafka_python"] / rate["file"], 3),
    }
    f["goals"] = {
        "confluent": {"value": f["ratios"]["segstream_confluent_to_confluent_raw_decode"], "goal": ">= 0.85",
                      "met": f["ratios"]["segstream_confluent_to_confluent_raw_decode"] >= GOALS["confluent"]},
        "kafka_python": {"value": f["ratios"]["segstream_kafka_python_to_kafka_python_raw"], "goal": ">= 0.9",
                         "met": f["ratios"]["segstream_kafka_python_to_kafka_python_raw"] >= GOALS["kafka_python"]},
    }
    emit("transports", f, users=a.users, events=a.events, produced=produced, segments=a.segments, dim=a.dim,
         partitions=1, log=log.name, encoder=encoder.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
