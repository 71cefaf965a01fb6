"""End to end: MovieLens replayed through a real broker into ``segstream run``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from helpers import SegstreamProcess, read_topic
from stream.contracts.user_segments import decode_segment_event

pytestmark = pytest.mark.integration

RATINGS = 100_836
USERS = 610


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "stream.cli", *args], check=True, capture_output=True, text=True)
    return out.stdout


def test_movielens_replay_through_broker(broker, topics, movielens_dir, tmp_path):
    log = tmp_path / "ml.msgpack"
    assert f"wrote {RATINGS:,} events" in _cli("import-movielens", str(movielens_dir), "--out", str(log))
    encoder = tmp_path / "enc.pt"
    _cli("train-encoder", "--log", str(log), "--out", str(encoder), "--epochs", "5", "--max-samples", "30000")

    broker.create(topics, partitions=1)
    out = _cli("produce", "--log", str(log), "--bootstrap", broker.bootstrap, "--input-topic", topics["input"])
    assert f"produced {RATINGS:,} events" in out

    proc = SegstreamProcess(broker.settings(topics), "--encoder", str(encoder))
    try:
        consumed = proc.wait_metric("segstream_events_consumed_total", lambda v: v >= RATINGS, timeout_s=240)
        assert consumed == RATINGS
        metrics = proc.metrics()
        assert metrics['segstream_events_invalid_total{reason="missing_field"}'] == 0
        assert metrics["segstream_users_tracked"] == USERS
        code, summary, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    assert summary["events"] == RATINGS
    assert summary["committed"] == {f"{topics['input']}:0": RATINGS}

    records = read_topic(broker.bootstrap, topics["output"], expected=summary["segment_changes"])
    assert len(records) == summary["segment_changes"]
    events = [decode_segment_event(r.value) for r in records]  # every one conforms to contract v1
    first = {e["user_id"] for e in events if e["previous_segment"] is None}
    assert len(first) == USERS
    assert all(r.key.decode() == e["user_id"] for r, e in zip(records, events))
    latest = {}
    for e in events:
        assert e["seq"] == latest.get(e["user_id"], {"seq": 0})["seq"] + 1  # per-user counter, +1 per change
        latest[e["user_id"]] = e
    held = Counter(e["segment"] for e in latest.values())
    assert len(held) >= 6, held
