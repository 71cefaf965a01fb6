"""End to end: DBSTREAM mode on ml-latest-small through a real broker, with segment ids
explained by the ``segment-lineage`` topic and profiles on ``segment-profiles``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import SegstreamProcess, read_topic
from stream.contracts.user_segments import decode_segment_event
from stream.contracts.lineage_profiles import decode_lineage, decode_profile

pytestmark = pytest.mark.integration

RATINGS = 100_836
USERS = 610


def test_dbstream_movielens_replay_publishes_lineage_that_explains_every_segment_id(broker, topics, movielens_dir,
                                                                                   tmp_path):
    log = tmp_path / "ml.msgpack"
    subprocess.run([sys.executable, "-m", "stream.cli", "import-movielens", str(movielens_dir), "--out", str(log)],
                   check=True, capture_output=True)
    broker.create(topics, partitions=1)
    subprocess.run([sys.executable, "-m", "stream.cli", "produce", "--log", str(log), "--bootstrap", broker.bootstrap,
                    "--input-topic", topics["input"]], check=True, capture_output=True)
    lineage_topic, profiles_topic = f"lineage-{topics['output']}", f"profiles-{topics['output']}"
    proc = SegstreamProcess(broker.settings(topics), "--clusterer", "dbstream", "--dbstream-radius", "0.3",
                            "--lineage-topic", lineage_topic, "--profiles-topic", profiles_topic,
                            "--profile-every-events", "20000")
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= RATINGS, timeout_s=240)
        code, summary, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]

    changes = [decode_segment_event(r.value) for r in read_topic(broker.bootstrap, topics["output"],
                                                                 expected=summary["segment_changes"])]
    assert len({c["user_id"] for c in changes}) == USERS
    lineage = [(r.key, decode_lineage(r.value)) for r in read_topic(broker.bootstrap, lineage_topic)]
    assert lineage and all(int(k) == ev["segments"][0] for k, ev in lineage)
    announced = {s: ev["model_version"] for _, ev in lineage if ev["kind"] in ("born", "split") for s in ev["segments"]}
    ended = {s: ev["model_version"] for _, ev in lineage if ev["kind"] in ("retired", "merged") for s in ev["segments"]}
    assert len(announced) == sum(len(ev["segments"]) for _, ev in lineage if ev["kind"] in ("born", "split"))  # no reuse
    for c in changes:  # every id a user is put in was announced by that model version and had not ended before it
        assert c["segment"] in announced and announced[c["segment"]] <= c["model_version"], c
        assert c["segment"] not in ended or ended[c["segment"]] > c["model_version"], c
    assert set(ended) <= set(announced)

    profiles = [(r.key, decode_profile(r.value)) for r in read_topic(broker.bootstrap, profiles_topic)]
    assert len({p["event_time"] for _, p in profiles}) >= 3  # published on schedule, every 20k events
    for key, p in profiles:
        assert int(key) == p["segment"] and p["segment"] in announced and p["size"] >= 0
