"""``segstream demo``: the whole product on one machine, with nothing to set up.

1. generate a behaviour log with planted user groups (plus a few malformed records);
2. train the default encoder (`segstream train-encoder`'s, DEFAULT_KIND) on it (cached in the work directory);
3. start the embedded broker (Tansu) on loopback and create the topics;
4. produce the log while the consumer runs, printing a live summary;
5. read ``user-segments`` back as a recommender would, and score the segments
   against the planted groups (adjusted Rand index).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from encoders.train import DEFAULT_KIND, TrainConfig, train_encoder
from eventlogs.recorded import write_events
from eventlogs.synthetic import SyntheticConfig, generate
from state.quality import adjusted_rand_index
from stream.runtime.app import run_consumer
from stream.contracts.user_segments import decode_segment_event
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.clients import ensure_topics, make_consumer
from stream.runtime.batch_result import BatchResult
from stream.cli.producer import produce_log
from stream.runtime.summary import RunSummary
from stream.settings import Settings

__all__ = ["run_demo"]

BAD_RECORDS = [
    {"user_id": "u000001", "action": "view"},  # missing ts
    {"user_id": "u000002", "action": "view", "ts": float("nan")},
    {"user_id": None, "action": "click", "ts": 1.7e9},
    {"user_id": "u000003", "action": 7, "ts": 1.7e9},
    {"user_id": "u000004", "action": "view", "ts": 9.9e12},  # far future
    "not a map",
]


def _demo_events(cfg: SyntheticConfig, bad_every: int) -> Any:
    for i, ev in enumerate(generate(cfg)):
        yield ev
        if bad_every and i % bad_every == bad_every - 1:
            yield BAD_RECORDS[(i // bad_every) % len(BAD_RECORDS)]


def run_demo(settings: Settings, *, workdir: str = "runs/demo", users: int = 3000, groups: int = 8,
             events: int = 120_000, partitions: int = 3, follow: bool = False, bad_every: int = 5000,
             out: Callable[[str], None] = print) -> int:
    os.makedirs(workdir, exist_ok=True)
    cfg = SyntheticConfig(users=users, groups=groups, events=events, seed=settings.seed)
    log_path = os.path.join(workdir, "demo-log.msgpack")
    meta_path = os.path.join(workdir, "demo-log.json")
    meta = {"synthetic": cfg.__dict__, "bad_every": bad_every}
    saved = json.load(open(meta_path)) if os.path.exists(meta_path) and os.path.exists(log_path) else {}
    if {k: saved.get(k) for k in meta} != meta:
        out(f"[1/5] generating {events:,} events for {users:,} users in {groups} planted groups -> {log_path}")
        total = write_events(log_path, _demo_events(cfg, bad_every))
        with open(meta_path, "w") as fh:
            json.dump({**meta, "records": total}, fh)
    else:
        total = int(saved["records"])
        out(f"[1/5] reusing {log_path} ({total:,} records)")

    encoder_path = settings.encoder or os.path.join(workdir, "encoder.pt")
    if not os.path.exists(encoder_path):
        out(f"[2/5] training the default encoder ({DEFAULT_KIND}) on the log -> {encoder_path}")
        train_encoder(log_path, encoder_path, TrainConfig.for_kind(DEFAULT_KIND, max_samples=60_000),
                      progress=lambda s: out(f"      {s}"))
    else:
        out(f"[2/5] reusing encoder {encoder_path}")

    with EmbeddedBroker() as broker:
        out(f"[3/5] embedded Kafka-protocol broker (Tansu) on {broker.bootstrap}")
        s = settings.replace(bootstrap=broker.bootstrap, encoder=encoder_path)
        ensure_topics(s, {s.input_topic: partitions})  # the consumer creates its outputs with their policies
        producer_error: list[BaseException] = []

        def produce() -> None:
            try:
                produce_log(s, log_path)
            except BaseException as exc:  # reported below
                producer_error.append(exc)

        out(f"[4/5] producing {total:,} records to '{s.input_topic}' while the consumer runs"
            + (f"; metrics: http://{s.metrics_host}:{s.metrics_port}/metrics" if s.metrics_port else ""))
        threading.Thread(target=produce, name="demo-producer", daemon=True).start()
        live = _LiveSummary(out)
        stop = threading.Event()
        summary = run_consumer(s, stop=stop, max_events=None if follow else total, idle_exit_s=None if follow else 60,
                               on_batch=live)
        live.final(summary)
        if producer_error:
            out(f"producer failed: {producer_error[0]}")
            return 1
        out("[5/5] reading 'user-segments' back as a recommender would")
        latest = _read_segments(s, expected=summary.changes)
        truth = cfg.group_of_users()
        users_seen = sorted(latest)
        labels = [latest[u] for u in users_seen]
        groups_true = [int(truth[int(u[1:])]) for u in users_seen]
        ari = adjusted_rand_index(groups_true, labels) if users_seen else float("nan")
        sizes: dict[int, int] = {}
        for seg in labels:
            sizes[seg] = sizes.get(seg, 0) + 1
        out(f"      {len(latest):,} users hold a segment; sizes: "
            + ", ".join(f"{k}:{v}" for k, v in sorted(sizes.items())))
        out(f"      agreement with the planted groups: adjusted Rand index = {ari:.3f}")
        return 0


class _LiveSummary:
    def __init__(self, out: Callable[[str], None], every_s: float = 1.0) -> None:
        self.out = out
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.last = 0.0
        self.sizes: dict[int, int] = {}
        self.version = 0

    def __call__(self, result: BatchResult, summary: RunSummary) -> None:
        self.sizes = {}
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.t0
        self.out(f"      {summary.events:>9,} events  {summary.events / elapsed:>8,.0f}/s  "
                 f"{summary.changes:>7,} segment changes  {summary.invalid} dead-lettered  "
                 f"model v{result.changes.model_version}")

    def final(self, summary: RunSummary) -> None:
        self.out(f"      done: {summary.events:,} records in {summary.seconds:.1f}s "
                 f"({summary.events_per_second:,.0f}/s), "
                 f"{summary.changes:,} segment changes, {summary.invalid} dead-lettered, stopped by {summary.stopped_by}")


def _read_segments(settings: Settings, expected: int, timeout_s: float = 30.0) -> dict[str, int]:
    consumer = make_consumer(settings.replace(group_id=f"demo-reader-{os.getpid()}"), settings.output_topic)
    latest: dict[str, int] = {}
    n = 0
    deadline = time.monotonic() + timeout_s
    try:
        while n < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    n += 1
                    if r.value is None:
                        latest.pop(r.key.decode(), None)
                    else:
                        ev = decode_segment_event(r.value)
                        latest[ev["user_id"]] = ev["segment"]
    finally:
        consumer.close(autocommit=False)
    return latest
