"""Unit level: the global-model protocol between pipelines, with a list standing in for the
model topic (the Kafka edge is covered by tests/stream/runtime/test_scaleout.py)."""

from __future__ import annotations

import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from state.global_model import GlobalKMeans, merge_summaries, model_digest
from state.kmeans import OnlineKMeans
from state.segments import assign
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings, SettingsError


def _pipelines(n: int, prefix: str = "i") -> list[Pipeline]:
    out = []
    for i in range(n):
        s = Settings(segments=4, warmup_users=60, model_update_events=400, global_model=True, instance_id=f"{prefix}{i}",
                     seed=i)
        out.append(Pipeline.from_settings(s))
    return out


class Topic:
    """The single-partition model topic: an append-only list every instance reads in order."""

    def __init__(self) -> None:
        self.log: list[dict] = []
        self.read: dict[str, int] = {}

    def pump(self, seg: GlobalKMeans, leader: bool) -> None:
        pos = self.read.get(seg.instance_id, 0)
        for msg in self.log[pos:]:
            seg.receive(msg)
        self.read[seg.instance_id] = len(self.log)
        self.log.extend(seg.outgoing(leader=leader))


def _run(pipes: list[Pipeline], topic: Topic, events: list[dict], batch: int = 200) -> list[tuple[str, int, int]]:
    """Users partitioned by id over the pipelines; pipeline 0 is the leader. Returns (instance, version, n)."""
    parts: list[list[dict]] = [[] for _ in pipes]
    for e in events:
        parts[int(e["user_id"][1:]) % len(pipes)].append(e)
    seen = []
    for start in range(0, max(len(p) for p in parts), batch):
        for i, p in enumerate(pipes):
            topic.pump(p.segmenter, leader=i == 0)
            chunk = parts[i][start:start + batch]
            if chunk:
                r = p.process_objects(chunk)
                if len(r.changes):
                    seen.append((p.segmenter.instance_id, r.changes.model_version, len(r.changes)))
    return seen


def test_instances_assign_only_with_announced_versions_and_agree_on_each_version():
    pipes = _pipelines(3)
    topic = Topic()
    events = list(generate(SyntheticConfig(users=600, groups=4, events=24_000, seed=3)))
    seen = _run(pipes, topic, events)
    for p in pipes:  # everyone reads the topic to its end
        topic.pump(p.segmenter, leader=False)
    assert len({p.segmenter.model.version for p in pipes}) == 1
    announced: dict[int, str] = {}
    for m in topic.log:
        if m["kind"] == "model":
            announced.setdefault(m["version"], m["digest"])  # the first record of a version wins
    assert len(announced) >= 5, "the leader kept merging"
    assert {inst for inst, _, _ in seen} == {"i0", "i1", "i2"}
    assert all(v in announced for _, v, _ in seen)  # no segment change with an unannounced version
    merged = [m for m in topic.log if m["kind"] == "model" and m["version"] > 1]
    assert any(set(m["instances"]) == {"i0", "i1", "i2"} for m in merged), "summaries of every instance merged"
    # the same version on every instance: the same centroids, so the same embedding gets the same segment
    for p in pipes:
        m = p.segmenter.model
        assert model_digest(m.centroids, m.segment_ids) == announced[m.version]
    x = np.random.default_rng(0).normal(size=(500, pipes[0].encoder.dim)).astype(np.float32)
    none = np.full(len(x), -1)
    segs = [assign(p.segmenter.model, x, none, 0.05)[0] for p in pipes]
    assert all(np.array_equal(segs[0], s) for s in segs[1:])
    # the followers' users that arrived before v1 were assigned once v1 came
    for p in pipes:
        assert sum(p.users_per_segment().values()) == len(p.store)


def test_the_first_record_of_a_version_wins():
    local = OnlineKMeans(2, 2, warmup_users=2)
    g = GlobalKMeans(local, "me")
    base = {"schema": "segstream.model/1", "kind": "model", "k": 2, "dim": 2, "segment_ids": [0, 1],
            "event_time": 0.0, "proposer": "x", "instances": ["x"]}
    first = {**base, "version": 1, "centroids": np.array([[0, 0], [1, 1]], "<f4").tobytes()}
    second = {**base, "version": 1, "centroids": np.array([[5, 5], [6, 6]], "<f4").tobytes()}
    assert g.receive(first) is not None
    assert g.receive(second) is None and g.ignored == 1
    assert g.model.centroids.tolist() == [[0, 0], [1, 1]]
    wrong = {**base, "version": 2, "k": 3, "centroids": b""}
    assert g.receive(wrong) is None and g.model.version == 1


def test_a_restarted_instance_starts_from_the_latest_version_and_does_not_reseed():
    pipes = _pipelines(2)
    topic = Topic()
    events = list(generate(SyntheticConfig(users=300, groups=4, events=8_000, seed=5)))
    _run(pipes, topic, events)
    latest = max(m["version"] for m in topic.log if m["kind"] == "model")
    fresh = _pipelines(1, prefix="restarted")[0]
    topic.pump(fresh.segmenter, leader=True)  # reads the whole log first, then may speak
    assert fresh.segmenter.model.version == latest
    assert not fresh.segmenter.warming
    assert all(m["version"] != 1 for m in topic.log[-3:] if m["kind"] == "model")
    r = fresh.process_objects(events[:500])
    assert len(r.changes) and r.changes.model_version == latest


def test_checkpoint_round_trip_keeps_the_local_learner_and_pending_users():
    p = _pipelines(1)[0]
    p.process_objects(list(generate(SyntheticConfig(users=30, groups=4, events=300, seed=1))))
    state = p.segmenter.state_dict()
    assert len(state["pending_ids"]) == 30  # no global model yet: every user waits for one
    q = _pipelines(1)[0]
    q.segmenter.load_state_dict(state)
    assert q.segmenter.seed_model(0.0)[0] == p.segmenter.seed_model(0.0)[0]
    with pytest.raises(ValueError):
        q.segmenter.load_state_dict({**state, "name": "kmeans"})


def test_merge_weighs_matched_centres():
    g = np.array([[0.0], [10.0]], np.float32)
    out = merge_summaries(g, [(np.array([[2.0], [12.0]], np.float32), np.array([1.0, 0.0])),
                              (np.array([[8.0], [4.0]], np.float32), np.array([3.0, 1.0]))])
    assert out.ravel().tolist() == pytest.approx([3.0, 8.0])


def test_global_model_needs_kmeans():
    with pytest.raises(SettingsError):
        Settings(global_model=True, clusterer="dbstream")
