"""Latency from a librdkafka producer's send to a separate subscriber of ``user-segments``, at a fixed rate,
for each producer ``linger.ms`` and each Kafka transport of ``segstream run``, with where the time goes.

    python -m bench.producer_latency --rate 5000 --seconds 15 --out docs/bench/latency.jsonl

Per transport (``SEGSTREAM_KAFKA_CLIENT``: kafka-python, confluent) one ``segstream run`` child consumes a
one-partition input topic of the embedded broker; a separate subscriber process (confluent-kafka) reads
``user-segments``. After 2,000 warm-up events have been applied (start-up, group join and seeding are never
charged to measured events), this process sends events at ``--rate`` through a confluent-kafka producer,
one phase of ``--seconds`` per ``--lingers`` value (a fresh producer each, librdkafka defaults otherwise:
``acks=all``), each event stamped ``ts`` = its send time. End to end is, per segment event, its arrival at
the subscriber minus the ``event_time`` of the event that caused it.

Where the time goes, per input event (the child records, for each batch, when its records came out of
``poll``, when the batch closed, when its outputs were encoded (``emitted_at``) and when its outbox was
handed to the producer; librdkafka gives each input record's delivery latency):

* ``produce``: send to the broker's acknowledgement (the producer's linger, the broker's append);
* ``fetch``: acknowledged to returned by the run loop's ``poll`` (fetch wait, the fetch response);
* ``batch_wait``: returned by ``poll`` to its micro-batch closing (``SEGSTREAM_BATCH_MAX_WAIT_MS``, and a
  batch still being processed, checkpointed and committed ahead of it);
* ``processing``: batch closed to its outputs encoded (decode, state, encoder, clustering);
* ``publish``: outputs encoded to handed to the producer (the checkpoint's commit point: changelog records
  and the partition marker sent and confirmed first);
* ``delivery`` (per segment event): handed to the producer to arrival at the subscriber.

The child's instrumentation wraps the run loop's ``poll``, ``_process``, clock and outbox publish from the
outside (``on_ready``); nothing in ``stream/`` knows it is being timed. Each phase also records the mean of
segstream's own timers over it (``segstream_batch_duration_seconds``: a batch processed, published,
checkpointed and committed; ``segstream_checkpoint_duration_seconds``; ``segstream_encoder_duration_seconds``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from bench.common import CACHE, bench_encoder, emit, note, percentiles_ms, scrape_samples, synthetic_log
from bench.output import append_result, command_line

ACTIONS = ("view", "click", "add_to_cart", "purchase", "rate")
STAGES = ("produce", "fetch", "batch_wait", "processing", "publish", "delivery")
WARMUP = 2000


# --- the segstream child ---------------------------------------------------------------------------------


def child(trace_path: str) -> None:
    """``segstream run`` in this process (settings from the environment), timed from the outside."""
    from stream.kafka.records import as_records
    from stream.runtime.app import run_consumer
    from stream.settings import Settings

    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    polls: list[tuple[float, np.ndarray]] = []  # (time poll returned, offsets it returned); one partition
    batches: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}

    def clock() -> float:  # the run loop's emitted_at
        t = time.time()
        b = cur.get("b")
        if b is not None and b["emitted"] is None:
            b["emitted"] = t
        return t

    def on_ready(runner: Any) -> None:
        poll, process, publish = runner.consumer.poll, runner._process, runner.outputs.publish

        def timed_poll(*a: Any, **k: Any) -> Any:
            out = poll(*a, **k)
            if out:
                now = time.time()
                for tp, fetched in out.items():
                    polls.append((now, as_records(tp, fetched).offsets.copy()))
            return out

        def timed_process(records: Any, decoded: Any = None) -> None:
            b = cur["b"] = {"closed": time.time(), "offsets": records.offsets.copy(), "emitted": None,
                            "released": None}
            process(records, decoded)
            batches.append(b)
            cur.pop("b", None)

        def timed_publish(keys: Any, values: Any) -> None:
            publish(keys, values)
            b = cur.get("b")
            if b is not None and b["released"] is None:
                b["released"] = time.time()

        runner.consumer.poll = timed_poll
        runner._process = timed_process
        runner.outputs.publish = timed_publish

    run_consumer(settings, stop=stop, on_ready=on_ready, clock=clock)
    fetched = {int(o): t for t, offs in polls for o in offs.tolist()}  # a re-fetch after a seek: the last
    rows = [(o, fetched.get(o, np.nan), b["closed"], b["emitted"] or np.nan, b["released"] or np.nan)
            for b in batches for o in b["offsets"].tolist()]
    np.save(trace_path, np.array(rows, dtype=np.float64).reshape(-1, 5))
    batch_rows = [(b["emitted"] or np.nan, b["released"] or np.nan) for b in batches]
    np.save(trace_path.replace(".npy", "-batches.npy"), np.array(batch_rows, dtype=np.float64).reshape(-1, 2))


# --- the subscriber ----------------------------------------------------------------------------------------


def subscriber(bootstrap: str, topic: str, out: str) -> None:
    """A separate consumer of ``user-segments``' one partition (librdkafka, assigned, no group to join;
    fetch wait 5 ms): (arrival, event_time, emitted_at) per segment event, until ``out + '.stop'`` exists.
    ``out + '.ready'`` once the first segment event (of the warm-up) has arrived: it is reading."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sub-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    rows: list[tuple[float, float, float]] = []
    while not os.path.exists(out + ".stop"):
        for m in c.consume(num_messages=10_000, timeout=0.02):
            now = time.time()
            if m.error() is None and m.value() is not None:
                v = msgpack.unpackb(m.value())
                rows.append((now, v["event_time"], v["emitted_at"]))
                if len(rows) == 1:
                    Path(out + ".ready").touch()
    c.close()
    np.save(out, np.array(rows, dtype=np.float64).reshape(-1, 3))


# --- the driver ----------------------------------------------------------------------------------------------


def _event(rng: np.random.Generator, user: int) -> bytes:
    return msgpack.packb({"user_id": f"lat-{user}", "action": ACTIONS[int(rng.integers(len(ACTIONS)))], "ts": time.time(),
                          "item_id": f"i{int(rng.integers(2000))}",
                          "categories": [f"c{user % 16}", f"c{int(rng.integers(32))}"],
                          "value": round(float(rng.uniform(1, 5)), 1)})


def _wait_applied(port: int, events: int, proc: subprocess.Popen, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"segstream run exited with {proc.returncode} during warm-up")
        try:
            applied = sum(s.value for s in scrape_samples(port, 2.0) if s.name == "segstream_events_applied_total")
        except OSError:
            applied = 0
        if applied >= events:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"segstream run applied fewer than {events} warm-up events in {timeout_s:.0f}s")


def _send_phase(bootstrap: str, topic: str, linger_ms: int, rate: float, seconds: float, rng: np.random.Generator,
                users: list[int]) -> tuple[np.ndarray, float]:
    """Send for ``seconds`` at ``rate`` through a fresh librdkafka producer; (offset, send, ack) per event."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all"})
    acks: list[tuple[int, float, float]] = []
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if rng.random() < 0.3:
            u = users[0]
            users[0] += 1
        else:
            u = int(rng.integers(users[0]))
        value = _event(rng, u)
        t = time.time()
        p.produce(topic, key=f"lat-{u}".encode(), value=value,
                  on_delivery=lambda err, m, t=t: acks.append((m.offset(), t, t + m.latency())) if err is None else None)
        p.poll(0)
        sent += 1
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0.001:
            time.sleep(ahead)
    achieved = sent / (time.monotonic() - t0)
    p.flush(30)
    return np.array(acks, dtype=np.float64).reshape(-1, 3), achieved


_TIMERS = ("segstream_batch_duration_seconds", "segstream_checkpoint_duration_seconds",
           "segstream_encoder_duration_seconds")


def _timers(port: int) -> dict[str, float]:
    """The child's own timing histograms (sum and count of each), from its /metrics."""
    try:
        samples = scrape_samples(port, 5.0)
    except OSError:
        return {}
    return {s.name: s.value for s in samples if s.name.startswith(_TIMERS) and s.name.endswith(("_sum", "_count"))}


def _timer_means(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Mean milliseconds per observation of each timer between two scrapes (one phase)."""
    out: dict[str, Any] = {}
    for name in _TIMERS:
        n = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
        total = after.get(name + "_sum", 0.0) - before.get(name + "_sum", 0.0)
        key = name.removeprefix("segstream_").removesuffix("_seconds")
        out[key] = {"mean_ms": round(total / n * 1e3, 1) if n else None, "count": int(n)}
    return out


def analyse(acks: np.ndarray, trace: np.ndarray, batches: np.ndarray, arrivals: np.ndarray) -> dict[str, Any]:
    """End to end per segment event, and the stages per input event, for the events of one phase."""
    start, end = acks[:, 1].min(), acks[:, 1].max()
    mine = arrivals[(arrivals[:, 1] >= start) & (arrivals[:, 1] <= end)]
    by_offset = {int(r[0]): r for r in trace}
    rows = np.array([[a[1], a[2], *by_offset[int(a[0])][1:]] for a in acks if int(a[0]) in by_offset])
    if not len(rows):  # the child traced none of this phase's events (it stopped early): say so, measure nothing
        return {"segment_events": int(len(mine)), "events_traced": 0,
                "end_to_end_ms": percentiles_ms(mine[:, 0] - mine[:, 1]), "stages_ms": {}}
    send, ack, fetched, closed, emitted, released = rows.T
    released_of = dict(zip(batches[:, 0].tolist(), batches[:, 1].tolist()))
    out_released = np.array([released_of.get(e, np.nan) for e in mine[:, 2].tolist()])
    return {"segment_events": int(len(mine)), "events_traced": int(len(rows)),
            "end_to_end_ms": percentiles_ms(mine[:, 0] - mine[:, 1]),
            "stages_ms": {stage: percentiles_ms(d) for stage, d in (
                ("produce", ack - send), ("fetch", fetched - ack), ("batch_wait", closed - fetched),
                ("processing", emitted - closed), ("publish", released - emitted),
                ("delivery", mine[:, 0] - out_released))}}


def run_transport(broker: Any, client: str, encoder: Path, a: argparse.Namespace) -> dict[str, Any]:
    from stream.kafka.clients import ensure_topics
    from stream.kafka.embedded_broker import free_port
    from stream.settings import Settings

    tag = uuid.uuid4().hex[:6]
    inp, outp = f"plat-in-{tag}", f"plat-out-{tag}"
    ensure_topics(Settings(bootstrap=broker.bootstrap), {inp: 1, outp: 1, f"{inp}-dlq": 1})
    port = free_port()
    work = CACHE / f"producer-latency-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    trace, arrivals = str(work / "trace.npy"), str(work / "arrivals.npy")
    env = {**os.environ, "SEGSTREAM_BOOTSTRAP": broker.bootstrap, "SEGSTREAM_INPUT_TOPIC": inp,
           "SEGSTREAM_OUTPUT_TOPIC": outp, "SEGSTREAM_DLQ_TOPIC": f"{inp}-dlq", "SEGSTREAM_GROUP_ID": f"g-{tag}",
           "SEGSTREAM_ENCODER": str(encoder), "SEGSTREAM_METRICS_PORT": str(port), "SEGSTREAM_KAFKA_CLIENT": client,
           "SEGSTREAM_BATCH_MAX_WAIT_MS": str(a.batch_max_wait_ms), "SEGSTREAM_LOG_LEVEL": "WARNING"}
    seg = subprocess.Popen([sys.executable, "-m", "bench.producer_latency", "--child", trace], env=env,
                           stdout=subprocess.DEVNULL)
    sub = subprocess.Popen([sys.executable, "-m", "bench.producer_latency", "--subscriber", broker.bootstrap, outp,
                            arrivals])
    rng = np.random.default_rng(1)
    phases: list[tuple[int, np.ndarray, float]] = []
    timers: list[dict[str, Any]] = []
    try:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for u in range(WARMUP):  # enough users to seed the segments
            p.produce(inp, key=f"lat-{u}".encode(), value=_event(rng, u))
            p.poll(0)
        p.flush(30)
        ready_s = _wait_applied(port, WARMUP, seg, timeout_s=300.0)
        deadline = time.monotonic() + 120.0
        while not os.path.exists(arrivals + ".ready"):  # the subscriber reads (the warm-up's segment events)
            if time.monotonic() > deadline or sub.poll() is not None:
                raise RuntimeError("the subscriber of user-segments received nothing from the warm-up")
            time.sleep(0.1)
        time.sleep(2.0)  # seeding's segment events drain before the measured phases
        users = [WARMUP]
        for linger in a.lingers:
            note(f"{client}: linger.ms={linger}, {a.rate:.0f} events/s for {a.seconds:.0f}s")
            before = _timers(port)
            acks, achieved = _send_phase(broker.bootstrap, inp, linger, a.rate, a.seconds, rng, users)
            phases.append((linger, acks, achieved))
            time.sleep(a.drain_s)  # this phase's last segment events arrive before the next one starts
            timers.append(_timer_means(before, _timers(port)))
        Path(arrivals + ".stop").touch()
        sub.wait(timeout=60)
        seg.send_signal(signal.SIGTERM)
        seg.wait(timeout=60)
    finally:
        for proc in (seg, sub):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    tr, bt, ar = np.load(trace), np.load(trace.replace(".npy", "-batches.npy")), np.load(arrivals)
    out = {"consumer_ready_s": round(ready_s, 1), "by_linger_ms": {}}
    for (linger, acks, achieved), own in zip(phases, timers):
        out["by_linger_ms"][str(linger)] = {"offered_events_per_s": round(achieved), "sent": int(len(acks)),
                                            **analyse(acks, tr, bt, ar), "segstream_timers": own}
    return out


def main(argv: list[str] | None = None) -> int:
    from stream.settings import Settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=5000.0)
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per linger.ms phase")
    p.add_argument("--lingers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5, 20])
    p.add_argument("--clients", type=lambda s: s.split(","), default=["kafka-python", "confluent"])
    p.add_argument("--batch-max-wait-ms", type=int, default=Settings().batch_max_wait_ms,
                   help="SEGSTREAM_BATCH_MAX_WAIT_MS of the consumer (default: the setting's default)")
    p.add_argument("--drain-s", type=float, default=3.0)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--out", help="append the JSON line to this file too (docs/bench/latency.jsonl)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--subscriber", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child)
        return 0
    if a.subscriber:
        subscriber(*a.subscriber)
        return 0

    from stream.kafka.embedded_broker import EmbeddedBroker

    encoder = bench_encoder(synthetic_log(20_000, 200_000), a.dim)
    figures: dict[str, Any] = {}
    with EmbeddedBroker() as broker:
        for client in a.clients:
            figures[client] = run_transport(broker, client, encoder, a)
    out = emit("producer-latency", figures, rate=a.rate, seconds=a.seconds, lingers=a.lingers, clients=a.clients,
               batch_max_wait_ms=a.batch_max_wait_ms, dim=a.dim, encoder=encoder.name)
    if a.out:
        append_result(a.out, out, command_line("bench.producer_latency", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
