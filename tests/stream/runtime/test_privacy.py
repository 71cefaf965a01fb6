"""Privacy end to end, in process (the run loop's own output writer, metrics and checkpoint store):

* with a pseudonymisation key, no raw user id, and no event id built from one, is in anything
  segstream writes (every topic but the dead letters, which keep the producer's bytes) or stores
  (global state and partition snapshots, the drift monitor's state), searched in the packed bytes;
* a ``delete`` removes the user from every copy kept in memory and in snapshots: state row,
  warm-up buffer, the segmenter's ring of recent embeddings, the event-id window, the drift
  monitor's embeddings; with and without pseudonymisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from eventlogs.synthetic import SyntheticConfig, generate
from helpers import RecordingPublisher
from state.user_store import user_keys
from stream.kafka.records import Records
from stream.observability.drift import DriftMonitor
from stream.observability.metrics import Metrics
from stream.runtime.checkpoints import CheckpointStore
from stream.runtime.pipeline import Pipeline
from stream.runtime.pseudonym import Pseudonymiser
from stream.runtime.runner import StreamRunner
from stream.settings import Settings

KEY = "privacy-test-key"
PARTITIONS = 3


class Harness:
    """A pipeline wired as ``segstream run`` wires it (StreamRunner: output writer, drift monitor as an
    erasure hook), fed record batches; ``stored()`` is the bytes of a checkpoint written now."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.pipeline = Pipeline.from_settings(settings, now=lambda: 2e9)
        self.publisher = RecordingPublisher()
        # a reference window larger than the run: every embedding stays in the monitor (and its state)
        self.metrics = Metrics(CollectorRegistry(), drift=DriftMonitor(reference_size=10**6))
        self.runner = StreamRunner(settings, self.pipeline, None, self.publisher, self.metrics)  # type: ignore[arg-type]
        self.store = CheckpointStore(tmp, "g", settings.input_topic)
        self.tmp = tmp
        self.offset = 0
        self.last_profiles: list[dict] = []

    def feed(self, events: list[dict], batch: int = 200) -> None:
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            values = [msgpack.packb(e) for e in chunk]
            keys = [str(e.get("user_id", "")).encode() for e in chunk]  # producers key by the raw user id
            offsets = self.offset + np.arange(len(chunk), dtype=np.int64)
            parts = (offsets % PARTITIONS).astype(np.int64)
            records = Records("events", parts, offsets, np.zeros(len(chunk), np.int64), keys, values)
            result = self.pipeline.process_records(values, parts.astype(np.int32))
            self.runner.outputs.write(result, records, emitted_at=2e9)
            self.last_profiles = result.profiles or self.last_profiles
            self.metrics.observe_batch(result, self.pipeline, records=len(chunk), value_bytes=0, seconds=0.0)
            self.offset += len(chunk)

    def stored(self) -> bytes:
        """Every byte a checkpoint written now puts on disk (global state with the drift monitor's, and
        one snapshot per partition), as StreamRunner.checkpoint writes it."""
        s = self.pipeline.store
        self.store.write({**self.pipeline.global_state(), "drift": self.metrics.drift.state()},
                         {p: (self.offset, s.export_rows(s.rows_of_partition(p))) for p in range(PARTITIONS)})
        files = sorted(self.tmp.rglob("*.snap"))
        blob = b"".join(f.read_bytes() for f in files)
        for f in files:  # the next call sees only its own checkpoint
            f.unlink()
        return blob

    def written(self, topic_filter: Any = None) -> bytes:
        return b"".join((k or b"") + (v or b"") for t, k, v in self.publisher.sent
                        if topic_filter is None or topic_filter(t))


def _log(users: int = 90, events: int = 2400, seed: int = 4) -> list[dict]:
    """Synthetic events whose event ids embed the user id (``u000017-3``), some re-delivered, some invalid."""
    evs = list(generate(SyntheticConfig(users=users, groups=3, events=events, seed=seed)))
    assert all(e["event_id"].startswith(e["user_id"] + "-") for e in evs)
    evs += [dict(e) for e in evs[100:160]]  # re-delivered copies: dropped by the event-id window
    for i in range(7, len(evs), 301):
        evs[i] = {**evs[i], "ts": "not a time"}  # rejected: dead-lettered with the producer's bytes
    return evs


SETTINGS = Settings(segments=3, warmup_users=30, model_update_events=300, dedup_window=4000,
                    profile_every_events=500, dwell_s=60.0, seed=1, input_topic="events")


def test_with_a_key_no_raw_user_id_is_stored_or_written(tmp_path):
    h = Harness(replace(SETTINGS, pseudonymise_key=KEY), tmp_path)
    evs = _log()
    raw_users = sorted({e["user_id"] for e in evs})
    h.feed(evs)
    h.feed([{"user_id": raw_users[0], "action": "delete", "ts": 1.8e9}])
    assert h.metrics.duplicates._value.get() > 0 and h.metrics.dead_letters._value.get() > 0
    stored = h.stored()
    settings = h.runner.settings
    not_dlq = h.written(lambda t: not t.startswith(settings.dlq_topic))
    for topic in (settings.output_topic, settings.lineage_topic, settings.profiles_topic):
        assert any(t == topic for t, _, _ in h.publisher.sent), topic  # every output topic was written
    for u in raw_users:
        assert u.encode() not in stored, u  # nor any event id "u…-n": they all contain the user id
        assert u.encode() not in not_dlq, u
    # what the pipeline keys on is the keyed hash, of event ids too
    p = Pseudonymiser(KEY)
    window = h.pipeline.global_state()["dedup"]
    held = {e["event_id"] for e in evs if e["user_id"] != raw_users[0] and isinstance(e["ts"], float)}
    assert set(window["ids"]) <= {p.event_id(e) for e in held} and len(window["ids"]) > 1000
    assert {(k or b"").decode() for t, k, _ in h.publisher.sent if t == settings.output_topic} <= \
        {p.pseudonym(u) for u in raw_users}
    # the dead-letter topic keeps rejected records byte for byte (documented): the producer's key and value
    dlq = [(k, v) for t, k, v in h.publisher.sent if t == settings.dlq_topic]
    assert dlq and all(msgpack.unpackb(v)["user_id"].encode() == k for k, v in dlq)

    # the control: the same run without a key does hold raw ids, so the search above can find them
    plain = Harness(SETTINGS, tmp_path / "plain")
    plain.feed(evs)
    assert sum(u.encode() in plain.stored() for u in raw_users) > len(raw_users) // 2


def _copies(h: Harness, uid: str) -> dict[str, int]:
    """Where the pipeline and the drift monitor still hold ``uid`` (as stored: raw id or pseudonym)."""
    p, key = h.pipeline, user_keys([uid])
    seg = p.segmenter
    return {"state": int(p.store.row_of(uid) is not None),
            "warm-up": int(uid in seg.waiting_users()),
            "recent ring": int(np.isin(seg._recent.keys[: min(seg._recent.n, seg._recent.size)], key).sum()),
            "event-id window": sum(u == uid for u in p.global_state()["dedup"]["users"]),
            "drift embeddings": int(np.isin(np.concatenate([np.zeros(0, np.uint64), *h.metrics.drift._reference_keys]), key).sum())}


@pytest.mark.parametrize("key", [None, KEY])
def test_delete_reaches_every_copy_in_memory_and_in_snapshots(tmp_path, key):
    settings = replace(SETTINGS, warmup_users=60, pseudonymise_key=key or "")
    h = Harness(settings, tmp_path)
    p = Pseudonymiser(key) if key else None
    as_stored = (lambda s: s) if p is None else p.pseudonym
    eid_stored = (lambda s: s) if p is None else p.event_id
    evs = _log()
    users = [e["user_id"] for e in evs]

    h.feed(evs[:40])  # the model is still warming: users wait in the warm-up buffer
    early = users[0]
    before = _copies(h, as_stored(early))
    assert h.pipeline.segmenter.warming and before["warm-up"] == 1 and before["recent ring"] >= 1
    h.feed([{"user_id": early, "action": "delete", "ts": 1.8e9}])
    h.feed([e for e in evs[40:2000] if e["user_id"] != early])  # (an event of theirs would start a new life)
    late = next(u for u in reversed(users[:2000]) if u != early)
    before = _copies(h, as_stored(late))
    assert before["state"] and before["recent ring"] and before["event-id window"] and before["drift embeddings"]
    h.feed([{"user_id": late, "action": "delete", "ts": 1.8e9}])

    for uid in (early, late):
        assert set(_copies(h, as_stored(uid)).values()) == {0}, uid
    stored = h.stored()
    for uid in (early, late):
        assert as_stored(uid).encode() not in stored
        mine = [e["event_id"] for e in evs[:2000] if e["user_id"] == uid and isinstance(e["ts"], float)]
        assert mine and not any(eid_stored(e).encode() in stored for e in mine)
    other = users[1] if users[1] not in (early, late) else users[2]
    assert as_stored(other).encode() in stored  # the search finds a user that was not erased
    assert h.metrics.users_erased._value.get() == 2
    # profiles computed after the erasure count only the users held
    h.feed([e for e in evs[2000:] if e["user_id"] not in (early, late)])
    assert h.last_profiles and sum(pr["size"] for pr in h.last_profiles) == len(h.pipeline.store)
