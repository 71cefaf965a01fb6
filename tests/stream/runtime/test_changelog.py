"""The state changelog against the embedded broker: a capped run (``--max-users``) keeps the output
contract across evictions and a restart with nothing local; an erasure reaches the changelog."""

from __future__ import annotations

import random

import msgpack
import pytest

from helpers import (SegstreamProcess, contract_history, contract_violations, produce, read_topic,
                     wait_committed)
from stream.runtime.changelog import FULL, MARKER_KEY, MODEL_KEY, TAIL
from stream.runtime.model_record import CHUNK_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("kafka_client")]  # on both Kafka clients

USERS = 150
N = 5000


def _log(seed: int = 4) -> list[dict]:
    rng = random.Random(seed)
    return [{"user_id": f"u{(u := rng.randrange(USERS))}", "action": ["view", "click", "purchase"][(u + i) % 3],
             "ts": 1.7e9 + i, "item_id": rng.randrange(30), "categories": [f"c{u % 4}"], "value": float(i % 3)}
            for i in range(N)]


def _latest(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """The changelog's last record per key (what compaction would keep)."""
    return {r.key: r.value for r in read_topic(bootstrap, topic, idle_s=2.0)}


def test_a_capped_run_keeps_seq_and_previous_segment_across_evictions_and_a_restart(broker, topics):
    broker.create(topics)
    events = _log()
    produce(broker.bootstrap, topics["input"], [msgpack.packb(e) for e in events],
            keys=[e["user_id"].encode() for e in events])
    args = ("--max-users", str(USERS // 3), "--batch-max-events", "20", "--warmup-users", "30", "--segments", "3",
            "--model-update-events", "400", "--half-life-s", "3600", "--lineage-topic", f"lineage-{topics['group']}")
    first = SegstreamProcess(broker.settings(topics), *args)
    try:
        first.wait_metric("segstream_events_consumed_total", lambda v: v >= N // 2)
    finally:
        first.kill()  # SIGKILL mid-stream; the next instance has no local directory
    second = SegstreamProcess(broker.settings(topics), *args)
    try:
        wait_committed(broker.bootstrap, topics["group"], topics["input"], {0: N}, [second])
        evicted = second.metrics()["segstream_users_evicted_total"]
        code, _, err = second.terminate()
        assert code == 0, err[-3000:]
    finally:
        second.kill()
    assert evicted > USERS  # users came and went many times over

    history, n = contract_history(broker.bootstrap, topics["output"])
    assert contract_violations(history) == []
    assert len(history) == USERS and all(evs for evs in history.values())  # every user holds a segment
    assert max(len(evs) for evs in history.values()) > 1
    latest = _latest(broker.bootstrap, f"{topics['group']}.{topics['input']}.changelog")
    kinds = {v[:1] for k, v in latest.items() if k not in (MARKER_KEY, MODEL_KEY) and not k.startswith(CHUNK_PREFIX)}
    assert kinds == {FULL, TAIL}  # evicted users keep only their contract tail
    print(f"capped run: {n} segment records, {evicted:.0f} evictions in the second instance, "
          f"{sum(1 for v in latest.values() if v[:1] == TAIL)} users held as tails in the changelog")


def test_an_erasure_leaves_a_tombstone_as_the_users_latest_changelog_record(broker, topics):
    broker.create(topics)
    events = _log()[:1500]
    events.insert(1200, {"user_id": "u7", "action": "delete", "ts": 1.7e9 + 1200})
    events = [e for i, e in enumerate(events) if not (i > 1200 and e["user_id"] == "u7")]
    produce(broker.bootstrap, topics["input"], [msgpack.packb(e) for e in events],
            keys=[e["user_id"].encode() for e in events])
    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "30", "--segments", "3", "--batch-max-events", "100",
                            "--lineage-topic", f"lineage-{topics['group']}", "--idle-exit", "4",
                            "--checkpoint-share", "1")  # a checkpoint per batch: u7's row is written before its delete
    code, summary, err = proc.wait(timeout_s=120)
    assert code == 0, err[-3000:]
    records = read_topic(broker.bootstrap, f"{topics['group']}.{topics['input']}.changelog", idle_s=2.0)
    u7 = [r.value for r in records if r.key == b"u7"]
    assert len(u7) >= 2 and u7[0] is not None and u7[-1] is None  # held, then erased
    assert all(r.value is not None for r in records if r.key == b"u8")
