"""Erasure and pseudonymisation over a real broker, searched everywhere segstream keeps or writes.

A log with ``delete`` events for some users (their events before it, everyone else's events after it)
runs through ``segstream run`` with a pseudonymisation key. Then:

* no raw user id (nor an event id built from one) is in any record of any topic segstream writes
  (``user-segments``, lineage, profiles, the state changelog), whole history included, nor in any
  local file it left: only the input and dead-letter topics hold the producer's bytes;
* an erased user's pseudonym (and their event ids' pseudonyms) is in nothing those topics keep as
  compaction would leave them (the last record per key: the embedded broker never compacts, so older
  records are history Kafka removes), except as the key of a tombstone; nor in any local file, the
  final snapshot of the state the process held when it stopped included.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np

from helpers import SegstreamProcess, pack_events, produce, read_topic
from stream.runtime.changelog import MARKER_KEY
from stream.runtime.checkpoints import pack, unpack
from stream.runtime.pseudonym import Pseudonymiser

KEY = "erasure-everywhere-key"
USERS = 60
EVENTS = 6000
ERASED = [f"user-{i:03d}" for i in range(0, USERS, 7)]


def _log() -> list[dict]:
    """Events of every user; the erased users' delete comes at 60% of the log, after their last event."""
    rng = random.Random(4)
    cut = int(EVENTS * 0.6)
    events: list[dict] = []
    for i in range(EVENTS):
        u = f"user-{rng.randrange(USERS):03d}"
        if i >= cut and u in ERASED:
            continue
        events.append({"user_id": u, "action": ["view", "click", "purchase"][i % 3], "ts": 1.7e9 + i,
                       "item_id": f"item-{rng.randrange(40)}", "categories": [f"c{int(u[5:]) % 4}"],
                       "event_id": f"{u}-e{i}"})  # like many producers: event ids built from user ids
        if i == cut:
            events += [{"user_id": u, "action": "delete", "ts": 1.7e9 + i} for u in ERASED]
    return events


def test_an_erased_user_is_gone_from_every_topic_and_file_and_no_raw_id_leaves_the_decoder(broker, topics, tmp_path,
                                                                                         kafka_client):
    tag = uuid.uuid4().hex[:8]
    lineage, profiles = f"lineage-{tag}", f"profiles-{tag}"
    broker.create(topics, partitions=2)
    events = _log()
    produce(broker.bootstrap, topics["input"], pack_events(events), keys=[e["user_id"].encode() for e in events])
    ckpt = tmp_path / "ckpt"
    proc = SegstreamProcess(broker.settings(topics), "--pseudonymise-key", KEY, "--checkpoint-dir", str(ckpt),
                            "--lineage-topic", lineage, "--profiles-topic", profiles, "--dedup-window", "5000",
                            "--warmup-users", "20", "--segments", "3", "--batch-max-events", "200",
                            "--profile-every-events", "1000", "--idle-exit", "4")
    try:
        code, summary, err = proc.wait(timeout_s=180)
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    assert summary["events"] == len(events)

    p = Pseudonymiser(KEY)
    raw = {f"user-{i:03d}".encode() for i in range(USERS)}
    erased_ids = {e["event_id"] for e in events if e["user_id"] in ERASED and "event_id" in e}
    gone = {p.pseudonym(u).encode() for u in ERASED} | {p.event_id(x).encode() for x in erased_ids}
    changelog = f"{topics['group']}.{topics['input']}.changelog"
    written = {name: read_topic(broker.bootstrap, name) for name in (topics["output"], lineage, profiles, changelog)}
    assert written[topics["output"]] and written[changelog]

    def holds(blob: bytes | None, needles: set[bytes]) -> bool:
        return bool(blob) and any(n in blob for n in needles)

    for name, records in written.items():
        assert not any(holds(r.key, raw) or holds(r.value, raw) for r in records), f"raw id in {name}"
        kept = [(k, _kept(k, v)) for (_, k), v in _latest(records).items() if v is not None]  # tombstones: only keys remain
        assert not any(holds(k, gone) or holds(v, gone) for k, v in kept), f"an erased user is kept in {name}"
    # the same search finds the users that were not erased (it is not looking in the wrong place)
    kept_users = {p.pseudonym(f"user-{i:03d}").encode() for i in range(USERS)} - {p.pseudonym(u).encode() for u in ERASED}
    for name in (topics["output"], changelog):
        kept = [(k, v) for (_, k), v in _latest(written[name]).items() if v is not None]
        assert all(any(u == k for k, _ in kept) for u in kept_users), name
    tombstoned = {k for (_, k), v in _latest(written[topics["output"]]).items() if v is None}
    assert {p.pseudonym(u).encode() for u in ERASED} <= tombstoned

    files = [f for f in Path(ckpt).rglob("*") if f.is_file()]
    assert files, "the run left no snapshot to search"
    for f in files:
        blob = f.read_bytes()
        assert not holds(blob, raw), f"raw id in {f}"
        assert not holds(blob, gone), f"an erased user is kept in {f}"


def _kept(key: bytes | None, value: bytes) -> bytes:
    """What a latest record keeps of users. A checkpoint marker carries its interval's outbox, tombstones
    included; a tombstone there is a tombstone (its key remains, as on the topic itself), so only the
    outbox's other records and the marker's other fields count."""
    if key != MARKER_KEY:
        return value
    doc = unpack(value)
    out = doc.pop("out", None)
    parts = [pack(doc)]
    if out:
        kl, vl = np.asarray(out["kl"]), np.asarray(out["vl"])
        starts = np.cumsum(kl) - kl
        parts += [out["k"][a:a + n] for a, n, v in zip(starts.tolist(), kl.tolist(), vl.tolist()) if v >= 0]
        parts.append(out["v"])
    return b"".join(parts)


def _latest(records: list) -> dict[tuple[int, bytes | None], bytes | None]:
    """What compaction leaves: per (partition, key), the last record (records come in offset order per partition)."""
    out: dict[tuple[int, bytes | None], bytes | None] = {}
    for r in records:
        out[(r.partition, r.key)] = r.value
    return out
