"""SegmentTable against the broker: late joiners, re-sent changes, erasures, following; ``segstream lookup``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from helpers import produce
from stream.client import SegmentTable
from stream.kafka.clients import ensure_topics
from stream.kafka.topic_reader import TopicNotFound
from stream.kafka.topics import topic_plan

REPO = Path(__file__).resolve().parents[3]


def value(user: str, segment: int, seq: int, cid: str) -> bytes:
    """A user-segments v1 value (test_segment_index.py checks the same shape against the contract)."""
    return msgpack.packb({"schema": 1, "user_id": user, "segment": segment, "previous_segment": None,
                          "event_time": 1.7e9 + seq, "emitted_at": 1.7e9 + seq + 0.5, "model_version": 2,
                          "distance": 0.25, "seq": seq, "change_id": cid})


def test_importing_the_client_does_not_import_torch():
    code = ("import sys, stream.client, stream.cli.lookup; "
            "heavy = sorted(m for m in ('torch', 'river') if m in sys.modules); assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr


def _create(broker, topics, partitions=3):
    s = broker.settings(topics)
    parts, configs = topic_plan(s, {"segments": partitions})
    ensure_topics(s, parts, configs=configs)
    return s


def _publish(broker, topic, changes):
    """changes: (user, segment, seq[, change id]) or (user, None) for an erasure; the change id defaults to one
    per (user, seq), so a re-send carries the same one, as segstream's does."""
    keys = [c[0].encode() for c in changes]
    values = [None if c[1] is None else value(c[0], c[1], c[2], c[3] if len(c) > 3 else f"{c[0]}-{c[2]}")
              for c in changes]
    produce(broker.bootstrap, topic, values, keys=keys)


def _history(users, changes_per_user):
    return [(f"u{u}", (u + k) % 5, k + 1) for k in range(changes_per_user) for u in range(users)]


@pytest.mark.integration
def test_a_table_built_late_holds_the_latest_segment_of_every_user(broker, topics):
    s = _create(broker, topics)
    history = _history(60, 4)
    for start in range(0, len(history), 80):  # several sends, multi-record batches on every partition
        _publish(broker, topics["output"], history[start:start + 80])
    with SegmentTable(s, bootstrap_timeout_s=60) as table:
        assert len(table) == 60
        for u in range(60):
            info = table.get(f"u{u}")
            assert (info.segment, info.seq, info.change_id, info.model_version) == ((u + 3) % 5, 4, f"u{u}-4", 2)
        assert sum(table.sizes().values()) == 60
        st = table.stats
        assert (st.records, st.applied, st.duplicates, st.stale, st.invalid) == (240, 240, 0, 0, 0)
        assert sum(table.cursor().values()) == 240 and len(table.cursor()) == 3


@pytest.mark.integration
def test_changes_resent_after_a_producer_crash_are_held_once_and_counted(broker, topics):
    s = _create(broker, topics)
    history = _history(40, 3)
    _publish(broker, topics["output"], history)
    _publish(broker, topics["output"], history[40:])  # the crashed producer re-sends the last two rounds
    _publish(broker, topics["output"], [("u1", 4, 2, "from-elsewhere")])  # out of order: another id, an old seq
    with SegmentTable(s) as table:
        assert len(table) == 40
        assert all(table.get(f"u{u}").seq == 3 and table.get(f"u{u}").segment == (u + 2) % 5 for u in range(40))
        st = table.stats
        assert (st.records, st.applied, st.duplicates, st.stale) == (201, 120, 80, 1)


@pytest.mark.integration
def test_tombstones_remove_users_and_following_sees_new_changes(broker, topics):
    s = _create(broker, topics)
    _publish(broker, topics["output"], _history(20, 2))
    _publish(broker, topics["output"], [("u3", None), ("u4", None)])
    seen: list[tuple[str, int | None]] = []
    with SegmentTable(s) as table:
        assert len(table) == 18 and table.get("u3") is None and "u4" not in table
        assert sum(table.sizes().values()) == 18
        mark = table.cursor()
        table.start(on_change=lambda user, info: seen.append((user, None if info is None else info.segment)))
        _publish(broker, topics["output"], [("u5", 4, 3), ("u6", None), ("u3", 1, 1), ("u7", 0, 1)])
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:  # u7's seq 1 is stale: 3 changes
            time.sleep(0.1)
        time.sleep(0.5)
        assert sorted(seen, key=str) == sorted([("u5", 4), ("u6", None), ("u3", 1)], key=str)
        changed = table.changes_since(mark)
        assert sorted(i.user_id for i in changed.updated) == ["u3", "u5"] and changed.removed == ["u6"]
        assert table.get("u3").seq == 1 and len(table) == 18
        assert table.changes_since(changed.cursor).updated == []
        with pytest.raises(RuntimeError, match="background thread"):
            table.poll()
    assert table.error is None


@pytest.mark.integration
def test_a_missing_topic_is_a_clear_error(broker, topics):
    with pytest.raises(TopicNotFound, match=topics["output"]):
        SegmentTable(broker.settings(topics), bootstrap_timeout_s=1)


def _lookup(broker, topics, *args, **kw):
    cmd = [sys.executable, "-m", "stream.cli", "lookup", *args, "--bootstrap", broker.bootstrap,
           "--output-topic", topics["output"], "--timeout", "30"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, **kw)


@pytest.mark.integration
def test_lookup_prints_the_segment_and_exits_1_for_an_unknown_user(broker, topics):
    _create(broker, topics)
    _publish(broker, topics["output"], [("alice", 2, 1), ("bob", 1, 1), ("alice", 4, 2)])
    out, err = _lookup(broker, topics, "alice").communicate(timeout=120)
    got = json.loads(out)
    assert (got["user_id"], got["segment"], got["previous_segment"], got["seq"], got["change_id"], got["topic"]) == (
        "alice", 4, None, 2, "alice-2", topics["output"])
    p = _lookup(broker, topics, "carol")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and out == ""
    assert f"segstream: user 'carol' has no segment in topic '{topics['output']}' (2 users there)" in err


@pytest.mark.integration
def test_lookup_follow_prints_each_change_until_stopped(broker, topics):
    _create(broker, topics)
    _publish(broker, topics["output"], [("bob", 1, 1)])
    p = _lookup(broker, topics, "bob", "--follow")
    lines: list[dict] = []

    def read() -> None:
        for ln in p.stdout:
            lines.append(json.loads(ln))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:
            time.sleep(0.1)
        _publish(broker, topics["output"], [("ann", 3, 1), ("bob", 2, 2), ("bob", None)])
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        reader.join(timeout=10)
    assert p.returncode == 0, p.stderr.read()[-3000:]
    assert [(ln["user_id"], ln["segment"]) for ln in lines] == [("bob", 1), ("bob", 2), ("bob", None)]
    assert lines[-1]["erased"] is True
