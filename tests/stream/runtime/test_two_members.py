"""Two members of one group on either Kafka client: the second joins mid-stream, partitions move with their
state (restored from snapshots), and the group ends with every offset committed and every event counted
once in the per-user state."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from helpers import SegstreamProcess, produce_by_partition, wait_committed, wait_partitions_spread
from state.features import FeatureSpec
from stream.kafka.clients import ensure_topics
from stream.runtime.checkpoints import CheckpointStore
from stream.settings import Settings

pytestmark = pytest.mark.integration

P = 4
N = 6_000
USERS = 120
HALF_LIFE = 1e9


def _events() -> list[dict]:
    return [{"user_id": f"u{i * 7 % USERS}", "action": "view", "ts": 1.7e9 + i, "item_id": i % 23,
             "categories": [f"c{i % 5}"]} for i in range(N)]


def test_a_second_member_takes_partitions_with_their_state(broker, topics, tmp_path, kafka_client):
    ensure_topics(Settings(bootstrap=broker.bootstrap), {topics["input"]: P, topics["output"]: P, topics["dlq"]: 1})
    events = _events()
    by_user = lambda e: int(e["user_id"][1:]) % P  # noqa: E731
    want = collections.Counter(produce_by_partition(broker.bootstrap, topics["input"], events[: N // 2], by_user))
    args = ("--half-life-s", str(HALF_LIFE), "--batch-max-events", "200", "--warmup-users", "20", "--segments", "3",
            "--checkpoint-interval-ms", "0", "--checkpoint-dir", str(tmp_path), "--kafka-client", kafka_client)
    first = SegstreamProcess(broker.settings(topics), *args)
    group = [first]
    try:
        wait_committed(broker.bootstrap, topics["group"], topics["input"], dict(want), group)
        group.append(SegstreamProcess(broker.settings(topics), *args))
        wait_partitions_spread(group, P)
        want.update(produce_by_partition(broker.bootstrap, topics["input"], events[N // 2:], by_user))
        wait_committed(broker.bootstrap, topics["group"], topics["input"], dict(want), group)
        for p in group:
            code, _, err = p.terminate()
            assert code == 0, err[-3000:]
    finally:
        for p in group:
            p.kill()

    store = CheckpointStore(tmp_path, topics["group"], topics["input"])
    count = FeatureSpec(half_life_s=HALF_LIFE).COUNT
    got: dict[str, int] = {}
    for p, off in want.items():
        snap = store.best(p, off)
        assert snap is not None and snap.offset == off, (p, snap)
        users = snap.load()["users"]
        scale = np.exp2(-(users["last_ts"] - users["t0"]) / HALF_LIFE)
        for i, uid in enumerate(users["ids"]):
            assert uid not in got  # every user in exactly one partition's snapshot
            got[uid] = round(float(users["dense"][i, count] * scale[i]))
    assert got == dict(collections.Counter(e["user_id"] for e in events))  # nothing lost, nothing twice
