"""Event-to-publish latency at a fixed offered load, through the embedded broker.

    python -m bench.latency --rate 5000 --seconds 30

A real ``segstream run`` child process consumes the input topic. This
process produces events at a steady ``--rate`` (a pool of users, some new,
some returning), each stamped with ``ts`` = its send time (wall clock, so
event time is send time). A separate reader process consumes
``user-segments`` and, for every segment event, records arrival wall time
minus the ``event_time`` of the event that caused it: the time from the
producer's send to the segment event's arrival at a separate consumer.
The measured phase starts once the child has applied the 2,000 warm-up
events (read from its ``/metrics``; ``consumer_ready_s`` in the output), so its
start-up (imports, encoder load, group join) is never charged to measured
events; segment events of the warm-up phase (seeding) are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from typing import Any

import msgpack
import numpy as np

from bench.common import bench_encoder, emit, note, scrape_samples, synthetic_log

ACTIONS = ("view", "click", "add_to_cart", "purchase", "rate")


def reader(bootstrap: str, topic: str, seconds: float, out: str) -> None:
    from stream.kafka.clients import make_consumer
    from stream.settings import Settings

    c = make_consumer(Settings(bootstrap=bootstrap), topic, group_id=f"reader-{uuid.uuid4().hex[:6]}",
                      fetch_max_wait_ms=5)
    lat: list[tuple[float, float]] = []
    deadline = time.time() + seconds
    open(out + ".ready", "w").close()
    while time.time() < deadline and not os.path.exists(out + ".stop"):
        for records in c.poll(timeout_ms=20).values():
            now = time.time()
            for r in records:
                if r.value is not None:
                    lat.append((now, msgpack.unpackb(r.value)["event_time"]))
    c.close(autocommit=False)
    with open(out, "w") as f:
        json.dump(lat, f)


def _wait_consumed(port: int, events: int, consumer: subprocess.Popen, *, timeout_s: float) -> float:
    """Seconds until the ``segstream run`` child has applied ``events`` events (its /metrics, over HTTP).

    The measured phase starts only then: a child still importing torch or joining
    its group would otherwise charge its start-up to the first measured events.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if consumer.poll() is not None:
            raise RuntimeError(f"segstream run exited with {consumer.returncode} during warm-up")
        try:
            samples = scrape_samples(port, timeout_s=2.0)
        except OSError:
            samples = []
        applied = sum(s.value for s in samples if s.name == "segstream_events_applied_total")
        if applied >= events:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"segstream run applied fewer than {events} warm-up events in {timeout_s:.0f}s")


def _event(rng: random.Random, user: int) -> dict[str, Any]:
    return {"user_id": f"lat-{user}", "action": rng.choice(ACTIONS), "ts": time.time(),
            "item_id": f"i{rng.randrange(2000)}", "categories": [f"c{user % 16}", f"c{rng.randrange(32)}"],
            "value": round(rng.uniform(1, 5), 1)}


def main(argv: list[str] | None = None) -> int:
    from stream.settings import Settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=5000.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--batch-max-wait-ms", type=int, default=Settings().batch_max_wait_ms,
                   help="SEGSTREAM_BATCH_MAX_WAIT_MS of the consumer (default: the setting's default)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--reader", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.reader:
        reader(a.reader[0], a.reader[1], float(a.reader[2]), a.reader[3])
        return 0

    from stream.kafka.embedded_broker import EmbeddedBroker, free_port
    from stream.kafka.clients import ensure_topics, make_producer
    from stream.settings import Settings

    encoder = bench_encoder(synthetic_log(20_000, 200_000), a.dim)
    rng = random.Random(1)
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:6]
        inp, outp = f"lat-in-{tag}", f"lat-out-{tag}"
        s = Settings(bootstrap=broker.bootstrap, input_topic=inp)
        ensure_topics(s, {inp: 1, outp: 1, f"{inp}-dlq": 1})
        metrics_port = free_port()
        env = {**os.environ, "SEGSTREAM_BOOTSTRAP": broker.bootstrap, "SEGSTREAM_INPUT_TOPIC": inp,
               "SEGSTREAM_OUTPUT_TOPIC": outp, "SEGSTREAM_DLQ_TOPIC": f"{inp}-dlq", "SEGSTREAM_GROUP_ID": f"g-{tag}",
               "SEGSTREAM_ENCODER": str(encoder), "SEGSTREAM_METRICS_PORT": str(metrics_port),
               "SEGSTREAM_BATCH_MAX_WAIT_MS": str(a.batch_max_wait_ms), "SEGSTREAM_LOG_LEVEL": "WARNING"}
        consumer = subprocess.Popen([sys.executable, "-m", "stream.cli", "run"], env=env, stdout=subprocess.DEVNULL)
        out = os.path.join("runs", "bench", f"latency-{tag}.json")
        rd = subprocess.Popen([sys.executable, "-m", "bench.latency", "--reader", broker.bootstrap, outp,
                               str(a.seconds + 600), out])
        try:
            while not os.path.exists(out + ".ready"):
                time.sleep(0.1)
            producer = make_producer(s)
            # warm-up: enough users to seed the segments, sent quickly, then a pause
            for u in range(2000):
                producer.send(inp, key=f"lat-{u}".encode(), value=msgpack.packb(_event(rng, u)))
            producer.flush()
            ready_s = _wait_consumed(metrics_port, 2000, consumer, timeout_s=180.0)
            time.sleep(2.0)  # seeding's segment events drain before the measured phase
            start = time.time()
            note(f"offering {a.rate:.0f} events/s for {a.seconds:.0f}s")
            sent = 0
            next_user = 2000
            t0 = time.monotonic()
            while time.monotonic() - t0 < a.seconds:
                if rng.random() < 0.3 or next_user < 4000:
                    u, next_user = next_user, next_user + 1
                else:
                    u = rng.randrange(next_user)
                producer.send(inp, key=f"lat-{u}".encode(), value=msgpack.packb(_event(rng, u)))
                sent += 1
                ahead = sent / a.rate - (time.monotonic() - t0)
                if ahead > 0.001:
                    time.sleep(ahead)
            producer.flush()
            achieved = sent / (time.monotonic() - t0)
            time.sleep(10.0)  # the last events' segment events arrive
            open(out + ".stop", "w").close()
            rd.wait(timeout=60)
        finally:
            consumer.terminate()
            consumer.wait(timeout=30)
            if rd.poll() is None:
                rd.kill()
        with open(out) as fh:
            pairs = np.array(json.load(fh)).reshape(-1, 2)
        for leftover in (out, out + ".ready", out + ".stop"):
            os.remove(leftover)
        # only segment events caused by events sent during the measured phase (not warm-up or seeding)
        pairs = pairs[pairs[:, 1] >= start]
        lat = pairs[:, 0] - pairs[:, 1]
        figures = {"offered_events_per_s": round(achieved), "sent": sent, "consumer_ready_s": round(ready_s, 1), "segment_events_measured": int(len(lat)),
                   "latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1e3, 1),
                                  "p99": round(float(np.percentile(lat, 99)) * 1e3, 1),
                                  "max": round(float(lat.max()) * 1e3, 1)}}
    emit("latency", figures, rate=a.rate, seconds=a.seconds, batch_max_wait_ms=a.batch_max_wait_ms, dim=a.dim,
         encoder=encoder.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
