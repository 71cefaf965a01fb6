"""Publishing segment events: kafka-python's ``send`` per record vs whole record batches.

    python -m bench.produce --events 100000

Segment events shaped like contract v1 (about 130 bytes, keyed by user) go
through :class:`stream.kafka.clients.Publisher` to a 4-partition topic of the
embedded broker, ``--batch`` at a time, each batch confirmed before the next
(as the consumer loop does): once with one ``send`` per record
(``SEGSTREAM_COLUMNAR_PRODUCE=false``) and once as whole record batches
(:mod:`stream.kafka.batch_produce`, the default). The rate is records confirmed per
second of send + confirm.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import msgpack

from bench.common import emit, note


def publish_rate(bootstrap: str, keys: list[bytes], values: list[bytes], batch: int, *, columnar: bool) -> dict[str, Any]:
    from stream.kafka.clients import Publisher, ensure_topics, make_producer
    from stream.settings import Settings

    topic = f"produce-{uuid.uuid4().hex[:6]}"
    settings = Settings(bootstrap=bootstrap)
    ensure_topics(settings, {topic: 4})
    producer = make_producer(settings)
    pub = Publisher(producer, columnar=columnar)
    try:
        pub.send_many(topic, keys[:10], values[:10])  # metadata and connections before the clock starts
        pub.confirm()
        t = time.perf_counter()
        confirmed = 0
        for i in range(0, len(keys), batch):
            pub.send_many(topic, keys[i:i + batch], values[i:i + batch])
            confirmed += pub.confirm()
        secs = time.perf_counter() - t
    finally:
        producer.close(timeout=10)
    return {"records": confirmed, "seconds": round(secs, 3), "records_per_s": round(confirmed / secs),
            "us_per_record": round(secs / confirmed * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=2000, help="records per send_many + confirm")
    a = p.parse_args(argv)
    from stream.kafka.embedded_broker import EmbeddedBroker

    keys = [f"user-{i % 50_000:06d}".encode() for i in range(a.events)]
    values = [msgpack.packb({"schema": 1, "user_id": k.decode(), "segment": i % 8, "previous_segment": 3,
                             "event_time": 1.7e9 + i, "emitted_at": 1.7e9, "model_version": 2, "distance": 0.5,
                             "seq": i, "change_id": f"{i:032x}"}) for i, k in enumerate(keys)]
    figures: dict[str, Any] = {"value_bytes": len(values[0])}
    with EmbeddedBroker() as broker:
        for name, columnar in (("send_per_record", False), ("record_batches", True)):
            figures[name] = publish_rate(broker.bootstrap, keys, values, a.batch, columnar=columnar)
            note(f"{name} {figures[name]}")
    figures["speedup"] = round(figures["record_batches"]["records_per_s"] / figures["send_per_record"]["records_per_s"], 2)
    emit("produce", figures, events=a.events, batch=a.batch, partitions=4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
