"""Three consumers in one group on a 6-partition topic, each with nothing local (the state changelog in
Kafka is all they share); one is SIGKILLed and another added mid-stream. The final per-user state in the
changelog equals an uninterrupted single consumer's, the output contract holds, and no partition is
processed by two members in the same generation; on either Kafka client."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from helpers import (SegstreamProcess, committed, contract_history, contract_violations, freeze_partition_owner,
                     log_records, partition_owner, produce_by_partition, read_topic, wait_committed,
                     wait_partitions_spread)
from state.features import FeatureSpec
from state.user_store import UserStore
from stream.kafka.records import Records
from stream.runtime.changelog import decode_partition, row_dtype
from stream.kafka.clients import ensure_topics
from stream.settings import Settings

pytestmark = pytest.mark.integration

P = 6
N = 12_000
USERS = 300
HALF_LIFE = 1e9


def _events() -> list[dict]:
    rng = random.Random(9)
    events = []
    for i in range(N):
        u = rng.randrange(USERS)
        events.append({"user_id": f"u{u}", "action": ["view", "click", "purchase"][(u + i) % 3], "ts": 1.7e9 + i,
                       "item_id": rng.randrange(40), "categories": [f"c{u % 5}"], "value": float(i % 4)})
    return events


def _produce(bootstrap: str, topic: str, events: list[dict]) -> dict[int, int]:
    return produce_by_partition(bootstrap, topic, events, lambda e: int(e["user_id"][1:]) % P)


def _state(bootstrap, group, topic, want: dict[int, int]) -> dict[str, tuple]:
    """Per-user behavioural state as of each user's last event (independent of the decay reference), as the
    group's state changelog holds it at its last checkpoint marker."""
    records = read_topic(bootstrap, f"{group}.{topic}.changelog", idle_s=2.0)
    dtype = row_dtype(UserStore(FeatureSpec(half_life_s=HALF_LIFE), capacity=1))
    out = {}
    for p, off in want.items():
        mine = [r for r in records if r.partition == p]
        block = Records.single(topic, p, np.array([r.offset for r in mine]), np.array([r.timestamp_ms for r in mine]),
                               [r.key for r in mine], [r.value for r in mine])
        st = decode_partition(p, block, len(mine), dtype)
        assert st.offset == off, (p, st.offset, off)
        b = st.users
        scale = np.exp2(-(b["last_ts"] - b["t0"]) / HALF_LIFE)
        dense = b["dense"].astype(np.float64) * scale[:, None]
        item_w = b["item_w"].astype(np.float64) * scale[:, None]
        for i, uid in enumerate(k.decode() for k in b["ids"]):  # (the changelog's keys: UTF-8 bytes)
            assert uid not in out  # every user in exactly one partition's snapshot
            # the recent-items ring: same content whatever the batching (its rotation depends on batch cuts)
            ring = sorted(zip(b["items"][i].tolist(), item_w[i].tolist()))
            out[uid] = (dense[i], b["last_ts"][i], [t for t, _ in ring], np.array([w for _, w in ring]), 0, p)
    return out


def test_three_consumers_with_a_kill_and_a_join_match_one_uninterrupted_consumer(broker, topics, tmp_path,
                                                                               kafka_client):
    ensure_topics(Settings(bootstrap=broker.bootstrap), {topics["input"]: P, topics["output"]: P, topics["dlq"]: 1})
    events = _events()
    want = collections.Counter(_produce(broker.bootstrap, topics["input"], events[: N // 2]))
    common = ("--half-life-s", str(HALF_LIFE), "--batch-max-events", "150", "--warmup-users", "30", "--segments", "3",
              "--checkpoint-interval-ms", "0", "--log-level", "DEBUG", "--log-format", "json",
              "--kafka-client", kafka_client)
    ref_topics = {**topics, "group": topics["group"] + "-ref", "output": topics["output"] + "-ref"}
    ref = SegstreamProcess(broker.settings(ref_topics), *common, "--lineage-topic", f"lineage-{topics['group']}-ref")
    common += ("--lineage-topic", f"lineage-{topics['group']}")
    group = [SegstreamProcess(broker.settings(topics), *common) for _ in range(3)]  # nothing local
    errs = []
    try:
        # once the three share the partitions, one is frozen before the second half goes in and killed
        # after it: its partitions' share of the second half is work it leaves unfinished however fast
        # the others drain theirs (picking a member by its lag raced them); then a fourth joins
        wait_partitions_spread(group, P)
        # the member to be frozen first processes records of its own partitions, so that each of them
        # is processed by it before the kill and by another member after it (the move under test)
        victim = partition_owner(group)
        before = group[victim].metrics()["segstream_events_consumed_total"]
        want.update(_produce(broker.bootstrap, topics["input"], events[N // 2: 2 * N // 3]))
        group[victim].wait_metric("segstream_events_consumed_total", lambda v: v > before)
        victim, frozen = freeze_partition_owner(group, victim)
        want.update(_produce(broker.bootstrap, topics["input"], events[2 * N // 3:]))
        want = dict(want)
        assert len(want) == P
        at_kill = committed(broker.bootstrap, topics["group"], topics["input"], P)
        assert any((at_kill[p] or 0) < want[p] for p in frozen), (frozen, at_kill, want)
        group[victim].proc.kill()
        errs.append(group[victim].proc.communicate()[1])
        survivors = [p for i, p in enumerate(group) if i != victim]
        survivors.append(SegstreamProcess(broker.settings(topics), *common))
        wait_committed(broker.bootstrap, topics["group"], topics["input"], want, survivors)
        wait_committed(broker.bootstrap, ref_topics["group"], topics["input"], want, [ref])
        for p in survivors:
            code, _, err = p.terminate()
            assert code == 0, err[-3000:]
            errs.append(err)
        code, _, _ = ref.terminate()
        assert code == 0
    finally:
        for p in group + [ref]:
            p.kill()

    got = _state(broker.bootstrap, topics["group"], topics["input"], want)
    ref_state = _state(broker.bootstrap, ref_topics["group"], topics["input"], want)
    assert sorted(got) == sorted(ref_state) and len(got) == USERS
    for uid, (dense, last_ts, items, item_w, head, part) in ref_state.items():
        g = got[uid]
        np.testing.assert_allclose(g[0], dense, rtol=1e-5, atol=1e-6, err_msg=uid)
        assert g[1] == last_ts and g[2] == items and g[4] == head and g[5] == part
        np.testing.assert_allclose(g[3], item_w, rtol=1e-5, atol=1e-6, err_msg=uid)
    counts = collections.Counter(e["user_id"] for e in events)
    c = FeatureSpec(half_life_s=HALF_LIFE).COUNT
    assert {u: round(float(v[0][c])) for u, v in got.items()} == dict(counts)  # nothing lost, nothing twice

    # the output contract across the kill and the moves: seq +1 per change, previous_segment = last published
    history, _ = contract_history(broker.bootstrap, topics["output"])
    assert contract_violations(history) == []
    assert len(history) == USERS and all(history.values())  # every user holds a segment

    # ownership: within one generation, each partition was processed by one member only
    owners: dict[tuple[int, int], set[str]] = collections.defaultdict(set)
    for err in errs:
        for b in log_records(err, "batch"):
            for p in b["partitions"]:
                owners[(b["generation"], p)].add(b["member"])
    assert owners and all(len(m) == 1 for m in owners.values()), owners
    members_per_partition = collections.defaultdict(set)
    for (gen, p), m in owners.items():
        members_per_partition[p] |= m
    print(f"committed at the kill: {at_kill}; owners (generation, partition) -> member: "
          f"{ {k: sorted(v)[0][-6:] for k, v in sorted(owners.items())} }")
    assert sum(v or 0 for v in at_kill.values()) < N  # the kill landed mid-stream
    assert len({gen for gen, _ in owners}) >= 2  # the kill and the join did move partitions
    if not any(len(m) >= 2 for m in members_per_partition.values()):  # the scenario did not happen: say so
        pytest.skip("the kill and the join moved no partition between members this time (timing under load)")
