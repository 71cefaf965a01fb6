"""Helpers for integration tests: running ``segstream`` as a real process, scraping its metrics,
and reading topics as a separate client would."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream.kafka.embedded_broker import free_port
from stream.kafka.clients import ensure_topics
from stream.kafka.records import Records
from stream.kafka.topic_reader import TopicNotFound, TopicReader, TopicRecord
from stream.settings import Settings

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@dataclass
class Broker:
    bootstrap: str
    embedded: Any

    def settings(self, topics: dict[str, str], **kw: Any) -> Settings:
        """Settings of a run on these topics; the Kafka client is ``SEGSTREAM_KAFKA_CLIENT``'s (what the
        ``kafka_client`` fixture sets, and what the ``segstream`` child processes read) unless ``kw`` names one."""
        kw.setdefault("kafka_client", os.environ.get("SEGSTREAM_KAFKA_CLIENT", "kafka-python"))
        return Settings(bootstrap=self.bootstrap, input_topic=topics["input"], output_topic=topics["output"],
                        dlq_topic=topics["dlq"], group_id=topics["group"], metrics_port=0, **kw)

    def create(self, topics: dict[str, str], partitions: int = 1) -> None:
        s = Settings(bootstrap=self.bootstrap)
        ensure_topics(s, {topics["input"]: partitions, topics["output"]: partitions, topics["dlq"]: 1})


def produce(bootstrap: str, topic: str, values: Iterable[bytes | None], keys: Iterable[bytes | None] | None = None,
            partition: int | None = None, **client: Any) -> int:
    """``client``: more kafka-python options (security: ``Settings.kafka_security()``)."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client)
    n = 0
    keys = iter(keys) if keys is not None else None
    futures = []
    for v in values:
        k = next(keys) if keys is not None else None
        futures.append(p.send(topic, key=k, value=v, partition=partition))
        n += 1
    p.flush()
    for f in futures:
        f.get(timeout=30)
    p.close()
    return n


def pack_events(events: Iterable[dict]) -> list[bytes]:
    return [msgpack.packb(e) for e in events]


def produce_by_partition(bootstrap: str, topic: str, events: Iterable[dict],
                         partition_of: Callable[[dict], int]) -> dict[int, int]:
    """Send events (msgpack, keyed by user id) in order, each to ``partition_of(event)``; records per partition."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    per: collections.Counter[int] = collections.Counter()
    futures = []
    for e in events:
        part = partition_of(e)
        futures.append(p.send(topic, key=str(e["user_id"]).encode(), value=msgpack.packb(e), partition=part))
        per[part] += 1
    p.flush()
    for f in futures:
        f.get(timeout=30)
    p.close()
    return dict(per)


def read_topic(bootstrap: str, topic: str, *, expected: int | None = None, timeout_s: float = 60.0,
               idle_s: float = 3.0, **client: Any) -> list[TopicRecord]:
    """Every record of ``topic`` from the beginning, as an independent client (:class:`TopicReader`: every
    partition, no group); ``client``: more kafka-python options (security). ``[]`` if the topic does not exist.

    Read to the end the fetch responses report (:meth:`TopicReader.read_to_end`), then on until nothing more
    arrives for ``idle_s``; with ``expected``, on to ``timeout_s`` until that many records are in, then 0.5 s
    of quiet. Quiet alone does not end a read: under load a fetch can take longer than ``idle_s``."""
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **client)
    try:
        reader = TopicReader(Settings(bootstrap=bootstrap), topic, timeout_s=timeout_s, consumer=consumer)
    except TopicNotFound:
        return []  # the reader closed its consumer
    out: list[TopicRecord] = []
    try:
        while True:
            reader.read_to_end(out.extend, timeout_s=max(deadline - time.monotonic(), 0.0))
            enough = expected is None or len(out) >= expected
            left = deadline - time.monotonic()
            if left <= 0:
                break
            quiet_s = idle_s if expected is None else 0.5
            more = reader.poll(min(quiet_s, left) if enough else left)  # returns at the first record
            if not more and enough:
                break
            out.extend(more)
    finally:
        reader.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int | None]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        c.close(autocommit=False)


class SegstreamProcess:
    """``segstream run`` as a child process with its own metrics port."""

    def __init__(self, settings: Settings, *extra: str, env: dict[str, str] | None = None,
                 metrics_port: int | None = None) -> None:
        self.metrics_port = metrics_port or free_port()  # chosen up front when a Prometheus must know it first
        args = [sys.executable, "-m", "stream.cli", "run", "--bootstrap", settings.bootstrap,
                "--input-topic", settings.input_topic, "--output-topic", settings.output_topic,
                "--dlq-topic", settings.dlq_topic, "--group-id", settings.group_id,
                "--metrics-port", str(self.metrics_port), "--session-timeout-ms", "6000",
                "--heartbeat-interval-ms", "1000", "--kafka-client", settings.kafka_client, *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def wait_metric(self, name: str, ok: Callable[[float], bool], timeout_s: float = 120.0) -> float:
        deadline = time.monotonic() + timeout_s
        value = float("nan")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"segstream exited early ({self.proc.returncode}):\n{err[-4000:]}")
            try:
                value = self.metrics().get(name, float("nan"))
                if ok(value):
                    return value
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} = {value} did not satisfy the condition within {timeout_s}s")

    def terminate(self, timeout_s: float = 30.0) -> tuple[int, dict[str, Any], str]:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 120.0) -> tuple[int, dict[str, Any], str]:
        out, err = self.proc.communicate(timeout=timeout_s)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return self.proc.returncode, (json.loads(lines[-1]) if lines else {}), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def log_records(err: str, message: str) -> list[dict]:
    """The JSON log records (``--log-format json``) of a process's stderr with this ``message``."""
    return [rec for rec in (json.loads(ln) for ln in err.splitlines() if ln.startswith("{"))
            if rec.get("message") == message]


def metric_sum(p: SegstreamProcess, prefix: str) -> float:
    """Sum of the process's samples whose name (with labels) starts with ``prefix``; 0 while it is not up."""
    try:
        return sum(v for k, v in p.metrics().items() if k.startswith(prefix))
    except OSError:
        return 0.0


def owned_partitions(p: SegstreamProcess) -> set[int]:
    """The input partitions a member reports as assigned to it (its metrics, scraped over HTTP)."""
    try:
        keys = [k for k in p.metrics() if k.startswith("segstream_partition_assigned{")]
    except OSError:
        return set()
    return {int(k.split('partition="', 1)[1].split('"', 1)[0]) for k in keys}


def wait_partitions_spread(group: list[SegstreamProcess], partitions: int, timeout_s: float = 120.0) -> None:
    """Until every member reports partitions of its own and together they report each partition once:
    the group has settled on one assignment."""
    deadline = time.monotonic() + timeout_s
    owned: list[set[int]] = []
    while time.monotonic() < deadline:
        for p in group:
            assert p.proc.poll() is None, p.proc.communicate()[1][-3000:]
        owned = [owned_partitions(p) for p in group]
        if all(owned) and sorted(x for o in owned for x in o) == list(range(partitions)):
            return
        time.sleep(0.2)
    raise AssertionError(f"the group did not settle on one assignment within {timeout_s}s: {owned}")


def partition_owner(group: list[SegstreamProcess]) -> int:
    """The index of the member owning the most input partitions."""
    owned = [owned_partitions(p) for p in group]
    return max(range(len(group)), key=lambda i: len(owned[i]))


def freeze_partition_owner(group: list[SegstreamProcess], victim: int | None = None) -> tuple[int, set[int]]:
    """SIGSTOP the member owning the most input partitions (or member ``victim``); returns its index and
    its partitions. Records that land on them afterwards stay there until it is killed and the group
    rebalances, however fast the other members drain theirs."""
    owned = [owned_partitions(p) for p in group]
    victim = partition_owner(group) if victim is None else victim
    assert owned[victim], "no member owns a partition"
    group[victim].proc.send_signal(signal.SIGSTOP)
    return victim, owned[victim]


def wait_committed(bootstrap: str, group: str, topic: str, want: dict[int, int], procs: list[SegstreamProcess],
                   timeout_s: float = 150.0) -> None:
    """Until the group's committed offsets equal ``want``; fails early if a process exits, and on timeout
    kills the processes and shows the end of their logs."""
    deadline = time.monotonic() + timeout_s
    got: dict[int, int | None] = {}
    while time.monotonic() < deadline:
        for p in procs:
            assert p.proc.poll() is None, p.proc.communicate()[1][-3000:]
        got = committed(bootstrap, group, topic, len(want))
        if got == want:
            return
        time.sleep(0.5)
    tails = []
    for p in procs:
        p.proc.kill()
        tails.append(p.proc.communicate()[1][-4000:])
    raise AssertionError(f"committed {got}, want {want}\n" + "\n----\n".join(tails))


def scrape(port: int) -> dict[str, float]:
    """Scrape ``/metrics`` over HTTP; returns sample name (with labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def contract_history(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> tuple[dict[str, list[dict]], int]:
    """Every user's published segment changes, exact re-sends (same ``change_id``, same content) folded
    into one, in publication order; and the number of records read. Fails on a ``change_id`` published
    twice with different content. A tombstone (erasure) starts the user's history again."""
    from stream.contracts.user_segments import decode_segment_event

    recs = read_topic(bootstrap, topic, idle_s=idle_s)
    seen: dict[str, tuple] = {}
    history: dict[str, list[dict]] = {}
    for r in recs:
        uid = r.key.decode()
        if r.value is None:
            history[uid] = []
            continue
        ev = decode_segment_event(r.value)
        row = (ev["user_id"], ev["segment"], ev["previous_segment"], ev["seq"])
        if ev["change_id"] in seen:
            assert seen[ev["change_id"]] == row, (ev, seen[ev["change_id"]])
            continue
        seen[ev["change_id"]] = row
        history.setdefault(uid, []).append(ev)
    return history, len(recs)


def contract_violations(history: dict[str, list[dict]]) -> list[str]:
    """Breaches of the user-segments contract: per user ``seq`` 1, 2, 3... with no skip and no repeat,
    and ``previous_segment`` the segment last published for the user."""
    bad = []
    for uid, evs in history.items():
        prev, seq = None, evs[0]["seq"] - 1 if evs else 0
        if evs and evs[0]["seq"] != 1 and evs[0]["previous_segment"] is None:
            bad.append(f"{uid}: first change has seq {evs[0]['seq']}")
        for ev in evs:
            if ev["seq"] != seq + 1:
                bad.append(f"{uid}: seq {ev['seq']} after {seq}")
            if prev is not None and ev["previous_segment"] != prev:
                bad.append(f"{uid}: previous_segment {ev['previous_segment']}, last published {prev}")
            seq, prev = ev["seq"], ev["segment"]
    return bad


def lineage_born_twice(bootstrap: str, topic: str) -> list[int]:
    """Segment ids announced ``born`` by two different lineage records (exact re-sends are one)."""
    import collections

    born = collections.defaultdict(set)
    for r in read_topic(bootstrap, topic, idle_s=2.0):
        ev = msgpack.unpackb(r.value, raw=False)
        if ev["kind"] in ("born", "split"):
            for s in ev["segments"]:
                born[s].add(ev["model_version"])
    return sorted(s for s, versions in born.items() if len(versions) > 1)


def overlap_agreement(got: dict[str, int], want: dict[str, int]) -> float:
    """Share of users of ``want`` whose segment in ``got`` matches, segment ids mapped by overlap
    (each id of ``got`` to the id of ``want`` it shares most users with)."""
    import collections

    pairs = collections.Counter((got[u], want[u]) for u in want if u in got)
    best: dict[int, tuple[int, int]] = {}
    for (g, w), n in pairs.items():
        if n > best.get(g, (0, -1))[0]:
            best[g] = (n, w)
    return sum(1 for u in want if u in got and best[got[u]][1] == want[u]) / max(1, len(want))


class RecordingPublisher:
    """A plain fake at the Kafka boundary: every send the output writer starts, in order, as
    (topic, key, value); each header of a send follows it as (topic + "#header", None, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send_many(self, topic: str, keys: Any, values: Any) -> None:
        self.sent += [(topic, k, v) for k, v in zip(keys, values)]

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.sent.append((topic, key, value))
        for _, h in headers or ():
            self.sent.append((topic + "#header", None, h))


class ChangelogSink:
    """A publisher that keeps what a changelog checkpoint sends, per partition, in order (no broker)."""

    def __init__(self):
        self.records: list[tuple[int, bytes]] = []
        self.values: list[bytes | None] = []

    def send_columns(self, topic, partition, key_bytes, key_lengths, value_bytes, value_lengths):
        at = vat = 0
        for n, m in zip(np.asarray(key_lengths).tolist(), np.asarray(value_lengths).tolist()):
            self.records.append((partition, key_bytes[at:at + n]))
            self.values.append(None if m < 0 else bytes(value_bytes[vat:vat + m]))
            at += n
            vat += max(m, 0)

    def confirm(self):
        return len(self.records)

    def log(self, partition: int, start: int = 0) -> Records:
        """What partition ``partition`` holds, as a changelog read returns it (records from ``start`` on)."""
        idx = [i for i, (p, _) in enumerate(self.records) if p == partition]
        keys, values = [self.records[i][1] for i in idx], [self.values[i] for i in idx]
        return Records.single("cl", partition, np.arange(start, len(idx)), np.zeros(len(idx) - start),
                              keys[start:], values[start:])
