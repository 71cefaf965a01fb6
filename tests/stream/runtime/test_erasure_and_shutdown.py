"""Deletion (state gone, counts updated, tombstone, fresh restart) with pseudonymised ids,
and SIGTERM finishing within a bounded time, with a later SIGKILL losing nothing."""

from __future__ import annotations

import collections
import signal
import time

import msgpack
import numpy as np
import pytest

from helpers import SegstreamProcess, committed, pack_events, produce, read_topic
from state.features import FeatureSpec
from stream.runtime.checkpoints import CheckpointStore
from stream.runtime.pseudonym import Pseudonymiser

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("kafka_client")]  # on both Kafka clients

KEY = "test-secret"
HALF_LIFE = 1e9


def _users(ckpt_dir, group, topic, partition=0):
    store = CheckpointStore(ckpt_dir, group, topic)
    snap = store.snapshots(partition)[-1]
    return snap.load()["users"]


def _counts(users: dict) -> dict[str, int]:
    spec = FeatureSpec(half_life_s=HALF_LIFE)
    c = users["dense"][:, spec.COUNT].astype(np.float64) * np.exp2(-(users["last_ts"] - users["t0"]) / HALF_LIFE)
    return {u: round(x) for u, x in zip(users["ids"], c)}


def test_delete_erases_state_publishes_tombstone_and_next_event_starts_fresh(broker, topics, tmp_path):
    broker.create(topics)
    pseudo = Pseudonymiser(KEY).pseudonym
    events = [{"user_id": f"person-{i % 12}", "action": ["view", "purchase"][i % 2], "ts": 1.7e9 + i,
               "item_id": i % 9, "categories": [f"c{i % 3}"]} for i in range(240)]
    events.append({"user_id": "person-3", "action": "delete", "ts": 1.7e9 + 500})
    produce(broker.bootstrap, topics["input"], pack_events(events))
    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "6", "--segments", "2",
                            "--checkpoint-dir", str(tmp_path), "--half-life-s", str(HALF_LIFE),
                            "--pseudonymise-key", KEY)
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= len(events))
        proc.wait_metric("segstream_offset_commits_total", lambda v: v >= 1)
        m = proc.metrics()
        assert m["segstream_users_erased_total"] == 1
        assert m["segstream_users_tracked"] == 11
        assert sum(v for k, v in m.items() if k.startswith("segstream_segment_users{")) == 11  # counts updated
        gone = _users(tmp_path, topics["group"], topics["input"])
        assert pseudo("person-3") not in gone["ids"] and len(gone["ids"]) == 11  # state gone from the snapshot

        produce(broker.bootstrap, topics["input"], pack_events([
            {"user_id": "person-3", "action": "view", "ts": 1.7e9 + 600, "item_id": 1}]))
        proc.wait_metric("segstream_users_tracked", lambda v: v == 12)
        code, _, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    fresh = _counts(_users(tmp_path, topics["group"], topics["input"]))
    assert fresh[pseudo("person-3")] == 1  # only the event after the delete
    assert fresh[pseudo("person-4")] == 20

    out = read_topic(broker.bootstrap, topics["output"])
    mine = [r for r in out if r.key == pseudo("person-3").encode()]
    tomb = [i for i, r in enumerate(mine) if r.value is None]
    assert len(tomb) == 1
    after = [msgpack.unpackb(r.value) for r in mine[tomb[0] + 1 :]]
    assert after and after[0]["seq"] == 1 and after[0]["previous_segment"] is None
    # pseudonymised: no raw id anywhere in what was published or stored
    assert not any(b"person-" in (r.key or b"") + (r.value or b"") for r in out)
    assert not any(b"person-" in p.read_bytes() for p in tmp_path.rglob("*.snap"))


def test_sigterm_is_bounded_and_a_later_kill_loses_nothing(broker, topics, tmp_path):
    broker.create(topics)
    n = 20_000
    events = [{"user_id": f"u{(i * 7) % 300}", "action": "view", "ts": 1.7e9 + i, "item_id": i % 50} for i in range(n)]
    produce(broker.bootstrap, topics["input"], pack_events(events), keys=[e["user_id"].encode() for e in events])
    args = ("--checkpoint-dir", str(tmp_path), "--half-life-s", str(HALF_LIFE), "--batch-max-events", "200",
            "--checkpoint-interval-ms", "300", "--group-instance-id", "m1")
    settings = broker.settings(topics)

    first = SegstreamProcess(settings, *args)
    try:
        first.wait_metric("segstream_events_consumed_total", lambda v: v >= 2000)
        t0 = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        code, s1, err = first.wait(timeout_s=30)
        took = time.monotonic() - t0
    finally:
        first.kill()
    assert code == 0 and s1["stopped_by"] == "signal", err[-3000:]
    print(f"SIGTERM to exit: {took:.2f}s")
    assert took < 10.0, took  # one batch, one checkpoint, leave the group
    c1 = committed(broker.bootstrap, topics["group"], topics["input"])[0]
    assert c1 == s1["events"] and 0 < c1 < n

    second = SegstreamProcess(settings, *args)
    try:
        second.wait_metric("segstream_events_consumed_total", lambda v: v >= 3000)
    finally:
        second.proc.kill()  # SIGKILL, between checkpoints
        second.proc.communicate()
    third = SegstreamProcess(settings, *args, "--idle-exit", "4")
    code, s3, err = third.wait(timeout_s=120)
    assert code == 0, err[-3000:]
    assert committed(broker.bootstrap, topics["group"], topics["input"])[0] == n
    want = collections.Counter(e["user_id"] for e in events)
    assert _counts(_users(tmp_path, topics["group"], topics["input"])) == dict(want)  # nothing lost, nothing twice
