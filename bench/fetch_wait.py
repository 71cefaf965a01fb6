"""How long a record waits in the embedded broker for a consumer that has caught up, per fetch max wait.

    python -m bench.fetch_wait --waits 20,100,500 --out docs/bench/fetch-wait.jsonl

A consumer that has read everything sends a fetch that finds nothing; the broker holds it ("parks" it) for
up to the fetch's max wait. Apache Kafka answers a parked fetch as soon as ``fetch.min.bytes`` have
arrived. The embedded broker (Tansu) does not: its fetch handler re-reads the log on its own timer, so a
record that arrives meanwhile waits for it (measured here: up to about half of the max wait). The fetch
max wait then sets a floor under a caught-up consumer's latency: kafka-python's in
``segstream run`` follows ``SEGSTREAM_BATCH_MAX_WAIT_MS`` (20 ms), librdkafka's is fixed at 100 ms
(``stream/kafka/confluent.py``; shorter waits mean more fetches, which slowed the embedded broker down
run after run, docs/performance.md).

For each ``--waits`` value: a fresh topic on the embedded broker, a kafka-python producer sending one
record every ``--gap-ms`` (unsynchronised with the fetches, so records arrive at any point of a park),
and a kafka-python consumer (``fetch_max_wait_ms`` = the value, caught up before the first record) that
polls in a loop and does nothing else. ``delay_ms``: each record's poll return minus its send time.
"""

from __future__ import annotations

import argparse
import struct
import threading
import time
import uuid
from typing import Any

from bench.common import emit, note, percentiles_ms
from bench.output import append_result, command_line


def trickle(bootstrap: str, wait_ms: int, gap_ms: float, records: int) -> dict[str, Any]:
    """Send delays of ``records`` records, one every ``gap_ms``, to a consumer with this fetch max wait."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from stream.kafka import ensure_topics
    from stream.settings import Settings

    topic = f"fetch-wait-{uuid.uuid4().hex[:6]}"
    ensure_topics(Settings(bootstrap=bootstrap), {topic: 1})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait_ms)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    consumer.poll(timeout_ms=1000)  # connected, positioned, caught up: the next fetch parks

    def send() -> None:
        for _ in range(records):
            time.sleep(gap_ms / 1000.0)
            producer.send(topic, struct.pack("<d", time.time()))
            producer.flush()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    delays: list[float] = []  # seconds
    deadline = time.monotonic() + records * gap_ms / 1000.0 + 10.0
    try:
        while len(delays) < records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                now = time.time()
                delays += [now - struct.unpack("<d", r.value)[0] for r in batch]
    finally:
        sender.join()
        consumer.close()
        producer.close()
    return {"fetch_max_wait_ms": wait_ms, "gap_ms": gap_ms, "records": len(delays), "delay_ms": percentiles_ms(delays)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waits", default="20,100,500", help="fetch max waits (ms), comma-separated")
    p.add_argument("--gap-ms", type=float, default=37.0, help="time between two records")
    p.add_argument("--records", type=int, default=60, help="records per wait")
    p.add_argument("--out", default="", help="also append the result (one JSON line) to this file")
    a = p.parse_args(argv)
    from stream.kafka.embedded_broker import EmbeddedBroker

    figures = []
    with EmbeddedBroker() as broker:
        for wait in (int(x) for x in a.waits.split(",") if x):
            figures.append(trickle(broker.bootstrap, wait, a.gap_ms, a.records))
            note(str(figures[-1]))
    out = emit("fetch-wait", {"runs": figures}, waits=a.waits, gap_ms=a.gap_ms, records=a.records)
    if a.out:
        append_result(a.out, out, command_line("bench.fetch_wait", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
