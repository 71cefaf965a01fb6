"""SIGKILL at seeded random points, restart each time with NOTHING local (the state comes back from the
Kafka changelog alone): the end state and the de-duplicated outputs equal those of an uninterrupted run,
no (user, seq) is missing or repeated, and no segment id is born twice."""

from __future__ import annotations

import collections
import random
import time

import msgpack
import numpy as np
import pytest

from helpers import (SegstreamProcess, committed, contract_history, contract_violations, lineage_born_twice,
                     overlap_agreement, produce, read_topic)
from state.features import FeatureSpec
from state.user_store import COLUMNS
from stream.runtime.checkpoints import CheckpointStore
from stream.contracts.user_segments import decode_segment_event
from stream.runtime.replay import replay_log
from stream.settings import Settings

pytestmark = pytest.mark.integration

N = 12_000
USERS = 240
B = 100
KILLS = {"kafka-python": 10, "confluent": 3}  # the second client's run: the same checks at fewer kill points
HALF_LIFE = 1e9  # long enough that the decayed event count is the plain count




def make_log(seed: int = 6) -> list[dict]:
    rng = random.Random(seed)
    seq: collections.Counter = collections.Counter()
    events = []
    for i in range(N):
        u = f"u{rng.randrange(USERS)}"
        g = int(u[1:]) % 4
        events.append({"user_id": u, "action": ["view", "click", "add_to_cart", "purchase"][(g + rng.randrange(2)) % 4],
                       "ts": 1.7e9 + i * 2.0, "item_id": rng.randrange(50) + 50 * g, "categories": [f"c{g}", f"c{rng.randrange(8)}"],
                       "value": float(rng.randrange(5)), "seq": seq[u], "event_id": f"{u}:{seq[u]}"})
        seq[u] += 1
        if rng.random() < 0.03:  # upstream is at-least-once too: a recent event delivered again
            events.append(dict(events[-1 - rng.randrange(min(len(events), 200))]))
    return events


LOG = make_log()
TOTAL = len(LOG)  # records in the log, re-delivered events included


def run_args(ckpt_dir, lineage: str) -> list[str]:
    local = ["--checkpoint-dir", str(ckpt_dir)] if ckpt_dir is not None else []
    return ["--group-instance-id", "member-1", "--aligned-batches", "true", "--batch-max-events", str(B), "--batch-max-wait-ms", "1500",
            *local, "--lineage-topic", lineage, "--checkpoint-interval-ms", "0", "--warmup-users", "60",
            "--segments", "4", "--model-update-events", "1500", "--half-life-s", str(HALF_LIFE), "--seed", "0",
            "--dedup-window", "5000"]


def wait_consumed(proc: SegstreamProcess, target: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.proc.communicate()[1][-3000:]
        try:
            if proc.metrics().get("segstream_events_consumed_total", 0) >= target:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"never consumed {target} records")


def final_state(ckpt_dir, group: str, topic: str) -> tuple[dict, dict]:
    store = CheckpointStore(ckpt_dir, group, topic)
    snap = store.best(0, committed=TOTAL)
    assert snap is not None and snap.offset == TOTAL
    users = snap.load()["users"]
    return users, store.load_global(snap.ckpt)


def outputs(bootstrap: str, topic: str) -> tuple[dict, int]:
    recs = read_topic(bootstrap, topic, idle_s=3.0)
    by_id = {}
    for r in recs:
        ev = decode_segment_event(r.value)
        row = (ev["user_id"], ev["segment"], ev["previous_segment"], ev["seq"], ev["model_version"],
               ev["event_time"], ev["distance"])
        assert by_id.setdefault(ev["change_id"], row) == row  # a re-sent change is the very same change
    return by_id, len(recs)


def test_kill_9_at_seeded_points_recovers_the_uninterrupted_state(broker, topics, tmp_path, kafka_client):
    broker.create(topics)
    events = LOG
    produce(broker.bootstrap, topics["input"], [msgpack.packb(e) for e in events],
            keys=[e["user_id"].encode() for e in events])
    ref_topics = {**topics, "output": topics["output"] + "-ref", "group": topics["group"] + "-ref"}
    broker.create(ref_topics)

    # the uninterrupted run (own group, own output topic, own checkpoints), alongside the killed ones
    lineage = {"ref": f"lineage-{topics['group']}-ref", "killed": f"lineage-{topics['group']}"}
    ref = SegstreamProcess(broker.settings(ref_topics), *run_args(tmp_path / "ref", lineage["ref"]), "--idle-exit", "5")
    rng = random.Random(2026)
    kills = []
    t0 = time.monotonic()
    try:
        for _ in range(KILLS[kafka_client]):
            # no local directory at all: each start restores from the changelog topic alone
            proc = SegstreamProcess(broker.settings(topics), *run_args(None, lineage["killed"]))
            target = rng.randrange(50, 400)
            try:
                wait_consumed(proc, target)
            finally:
                proc.proc.kill()  # SIGKILL: no handler, no final checkpoint
                proc.proc.communicate()
            kills.append((target, committed(broker.bootstrap, topics["group"], topics["input"])[0]))
        # the last one starts with an EMPTY local directory (restored from the changelog); its final
        # local snapshot is only there to compare the end state below
        last = SegstreamProcess(broker.settings(topics), *run_args(tmp_path / "killed", lineage["killed"]),
                                "--idle-exit", "5")
        code, summary, err = last.wait(timeout_s=180)
        assert code == 0, err[-3000:]
        assert summary["committed"] == {f"{topics['input']}:0": TOTAL}, (summary, err[-5000:])
        rcode, rsummary, rerr = ref.wait(timeout_s=180)
        assert rcode == 0, rerr[-3000:]
    finally:
        ref.kill()
    print(f"kills (target, committed offset after the kill): {kills}; {time.monotonic() - t0:.1f}s")
    assert len(kills) == KILLS[kafka_client]
    assert all(c is not None and 0 < c < TOTAL for _, c in kills), kills  # every kill landed mid-stream
    assert committed(broker.bootstrap, topics["group"], topics["input"])[0] == TOTAL
    assert committed(broker.bootstrap, ref_topics["group"], topics["input"])[0] == TOTAL

    # per-user state equals the uninterrupted run's, bit for bit, and the segment model too
    got, got_g = final_state(tmp_path / "killed", topics["group"], topics["input"])
    want, want_g = final_state(tmp_path / "ref", ref_topics["group"], topics["input"])
    assert got["ids"] == want["ids"] and len(want["ids"]) == USERS
    for c in COLUMNS:
        np.testing.assert_array_equal(got[c], want[c], err_msg=c)
    np.testing.assert_array_equal(got_g["segmenter"]["model"]["centroids"], want_g["segmenter"]["model"]["centroids"])
    assert got_g["segmenter"]["model"]["version"] == want_g["segmenter"]["model"]["version"] > 1

    # no (user, seq) missing or applied twice: the decayed count is the number of events
    spec = FeatureSpec(half_life_s=HALF_LIFE)
    distinct = list({e["event_id"]: e for e in events}.values())
    assert len(events) - len(distinct) > 300  # re-delivered input events, dropped by the event_id window
    per_user = collections.Counter(e["user_id"] for e in distinct)
    last_ts = {u: max(e["ts"] for e in distinct if e["user_id"] == u) for u in per_user}
    count = got["dense"][:, spec.COUNT].astype(np.float64) * np.exp2(-(got["last_ts"] - got["t0"]) / HALF_LIFE)
    assert {u: round(c) for u, c in zip(got["ids"], count)} == dict(per_user)
    assert {u: t for u, t in zip(got["ids"], got["last_ts"].tolist())} == last_ts

    # outputs: after dropping duplicates by change id, the same changes as the uninterrupted run
    got_out, n_got = outputs(broker.bootstrap, topics["output"])
    want_out, n_want = outputs(broker.bootstrap, ref_topics["output"])
    assert n_want == len(want_out) > USERS  # the uninterrupted run has no duplicates
    assert got_out == want_out
    print(f"outputs: {n_want} changes; killed runs published {n_got} records ({n_got - n_want} re-sent duplicates)")

    # the contract, checked on its own terms: seq +1 per change, previous_segment = last published,
    # no id born twice, every user holds a segment, final segments as the uninterrupted run's
    history, _ = contract_history(broker.bootstrap, topics["output"])
    assert contract_violations(history) == []
    assert lineage_born_twice(broker.bootstrap, lineage["killed"]) == []
    final = {u: evs[-1]["segment"] for u, evs in history.items() if evs}
    assert len(final) == USERS
    ref_history, _ = contract_history(broker.bootstrap, ref_topics["output"])
    agreement = overlap_agreement(final, {u: evs[-1]["segment"] for u, evs in ref_history.items() if evs})
    print(f"final segment agreement with the uninterrupted run: {agreement:.4f}")
    assert agreement >= 0.99

    # and the same changes, ids included, as an offline replay of the log in the same batches
    log_path = tmp_path / "log.msgpack"
    log_path.write_bytes(b"".join(msgpack.packb(e) for e in events))
    settings = Settings(batch_max_events=B, warmup_users=60, segments=4, model_update_events=1500,
                        half_life_s=HALF_LIFE, seed=0, dedup_window=5000)
    replay_log(settings, log_path, tmp_path / "replay.msgpack", clock="event")
    replayed = {}
    for key, value in msgpack.Unpacker(open(tmp_path / "replay.msgpack", "rb"), raw=False):
        ev = decode_segment_event(value)
        replayed[ev["change_id"]] = (ev["user_id"], ev["segment"], ev["previous_segment"], ev["seq"],
                                     ev["model_version"], ev["event_time"], ev["distance"])
    assert replayed == want_out
