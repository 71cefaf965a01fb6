"""Unit level: the global-model protocol between pipelines, with a list standing in for the
model topic (the Kafka edge is covered by tests/stream/runtime/test_scaleout.py and
tests/stream/runtime/test_global_groups.py)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from global_model_topic import Topic, by_id, final_labels, mixing, pipelines, run
from state.global_model import GlobalKMeans, model_digest
from state.kmeans import OnlineKMeans
from state.quality import adjusted_rand_index
from state.segments import assign, best_of_restarts, nearest
from state.summary_merge import cluster_summaries
from stream.settings import Settings


def test_instances_assign_only_with_announced_versions_and_agree_on_each_version():
    pipes = pipelines(3)
    topic = Topic({f"i{i}": [i] for i in range(3)})
    events = list(generate(SyntheticConfig(users=600, groups=4, events=24_000, seed=3)))
    seen = run(pipes, topic, events)
    assert len({p.segmenter.model.version for p in pipes}) == 1
    announced = topic.announced()
    assert len(announced) >= 5, "the leader kept merging"
    assert {inst for inst, _, _ in seen} == {"i0", "i1", "i2"}
    assert all(v in announced for _, v, _ in seen)  # no segment change with an unannounced version
    # every version, v1 included, merged every member's summary and names what each had consumed
    assert all(set(m["members"]) == {"i0", "i1", "i2"} for m in announced.values()), \
        [(v, m["members"]) for v, m in announced.items()]
    # the same version on every instance: the same centroids, so the same embedding gets the same segment
    for p in pipes:
        m = p.segmenter.model
        assert model_digest(m.centroids, m.segment_ids) == announced[m.version]["digest"]
    x = np.random.default_rng(0).normal(size=(500, pipes[0].encoder.dim)).astype(np.float32)
    none = np.full(len(x), -1)
    segs = [assign(p.segmenter.model, x, none, 0.05)[0] for p in pipes]
    assert all(np.array_equal(segs[0], s) for s in segs[1:])
    # the followers' users that arrived before v1 were assigned once v1 came
    for p in pipes:
        assert sum(p.users_per_segment().values()) == len(p.store)


@pytest.mark.parametrize("keyed", [True, False], ids=["groups-keyed-to-partitions", "users-hashed"])
def test_three_members_recover_every_partitions_groups(keyed):
    """Groups 0-1 live in partition 0, 2-3 in 1, 4-5 in 2 (or users hashed evenly): the merged model
    recovers them as one instance does, and no segment pairs groups of different partitions (the
    one-to-one averaging merge scored ARI 0.58-0.89 on the keyed log)."""
    cfg = SyntheticConfig(users=1800, groups=6, events=36_000, seed=4)
    pipes = pipelines(3, segments=6, warmup_users=100, model_update_events=1000)
    topic = Topic({f"i{i}": [i] for i in range(3)})
    part = (lambda e, n: e["group"] // 2) if keyed else by_id
    run(pipes, topic, list(generate(cfg)), part=part)
    truth, labels, member = final_labels(pipes, cfg)
    assert adjusted_rand_index(truth, labels) >= 0.95
    for i in range(3):
        assert adjusted_rand_index(truth[member == i], labels[member == i]) >= 0.95, i
    if keyed:
        assert not mixing(truth, labels, member)
    announced = topic.announced()
    assert len(announced) >= 5
    for v, m in announced.items():
        assert set(m["members"]) == {"i0", "i1", "i2"} and all(n > 0 for n in m["members"].values()), (v, m["members"])


def _blobs(seed: int, k: int = 8, dim: int = 16, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, dim))
    truth = np.repeat(np.arange(k), n)
    return (centres[truth] + rng.normal(0, 0.15, (k * n, dim))).astype(np.float32), truth


def _summary(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    c = best_of_restarts(x, k, np.random.default_rng(seed), 8)
    return c, np.bincount(nearest(x, c), minlength=k).astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_merge_clusters_the_union_of_members_summaries(seed):
    """Plain arrays, groups keyed to members (0-3 on a, 4-7 on b), k = 8, the previous version the
    leader's own centres: one segment per group. (The one-to-one averaging merge gave ARI 0.79, 0.73
    and 0.75 on these seeds: each global centre paired one group of a with one of b.)"""
    x, truth = _blobs(seed)
    a, b = _summary(x[truth < 4], 8, 1), _summary(x[truth >= 4], 8, 2)
    merged = cluster_summaries(np.vstack([a[0], b[0]]), np.concatenate([a[1], b[1]]), 8, init=a[0],
                               rng=np.random.default_rng(0))
    labels = nearest(x, merged)
    assert adjusted_rand_index(truth, labels) >= 0.95
    assert all(len(set((truth[labels == s] >= 4).tolist())) == 1 for s in np.unique(labels))


def test_a_group_only_one_light_member_sees_keeps_its_own_segment():
    x, truth = _blobs(5, k=4)
    heavy = _summary(x[truth < 3], 4, 1)
    light = _summary(x[truth == 3][:20], 4, 2)  # 20 users against 900
    merged = cluster_summaries(np.vstack([heavy[0], light[0]]), np.concatenate([heavy[1], light[1]]), 4,
                               init=heavy[0], rng=np.random.default_rng(0))
    assert adjusted_rand_index(truth, nearest(x, merged)) >= 0.95


def _member(name: str, k: int = 4, dim: int = 16, **kw) -> GlobalKMeans:
    return GlobalKMeans(OnlineKMeans(k, dim, warmup_users=40, update_every_events=100), name, **kw)


def _feed(g: GlobalKMeans, x: np.ndarray, prefix: str) -> None:
    """What the pipeline does with a batch of these users' embeddings (one event each)."""
    if g.warming:
        g.add_warmup([f"{prefix}{i}" for i in range(len(x))], x, event_time=1.0, events=len(x))
    if g.ready():
        g.seed_model(1.0)
        g.learn(x)
        g.tick(len(x), 1.0, {})


def test_a_merge_is_deterministic_whatever_order_the_summaries_came_in():
    x, truth = _blobs(7, k=4)
    members = {n: _member(n) for n in ("a", "b", "c")}
    sums = []
    for j, (n, g) in enumerate(members.items()):
        _feed(g, x[truth == j], n)
        sums += g.outgoing(leader=False, partitions=[j])
    proposals = []
    for order in (sums, sums[::-1]):
        leader = _member("a")
        for m in order:
            leader.receive(m)
        v1, = leader.outgoing(leader=True, partitions=[0], n_partitions=3)
        proposals.append(v1)
    assert proposals[0]["digest"] == proposals[1]["digest"]
    assert proposals[0]["members"] == {"a": 300, "b": 300, "c": 300}


def test_v1_waits_for_every_partitions_summary_then_goes_with_what_it_has():
    now = [0.0]
    x, truth = _blobs(8, k=4)
    leader, other = _member("a", first_wait_s=5.0, clock=lambda: now[0]), _member("b", clock=lambda: now[0])
    _feed(leader, x[truth < 2], "a")
    for m in leader.outgoing(leader=True, partitions=[0], n_partitions=2):
        leader.receive(m)
    assert leader.outgoing(leader=True) == []  # partition 1 not covered yet
    now[0] = 4.0
    assert leader.outgoing(leader=True) == []
    _feed(other, x[truth >= 2], "b")
    for m in other.outgoing(leader=False, partitions=[1]):
        leader.receive(m)
    v1, = leader.outgoing(leader=True)  # covered: at once
    assert set(v1["members"]) == {"a", "b"}
    alone = _member("a", first_wait_s=5.0, clock=lambda: now[0])
    _feed(alone, x[truth < 2], "a")
    for m in alone.outgoing(leader=True, partitions=[0], n_partitions=2):
        alone.receive(m)
    assert alone.outgoing(leader=True) == []
    now[0] = 9.5
    v1, = alone.outgoing(leader=True)  # waited first_wait_s: its own summary
    assert v1["members"] == {"a": 600}


def _two_members(seed: int, rounds: int, **kw) -> tuple[np.ndarray, np.ndarray, GlobalKMeans, GlobalKMeans, Topic]:
    """Members a (partition 0, the leader) and b (partition 1), each fed two of four planted groups, after
    ``rounds`` turns of the model topic (a first)."""
    x, truth = _blobs(seed, k=4)
    a, b = _member("a", **kw), _member("b", **kw)
    topic = Topic({"a": [0], "b": [1]})
    _feed(a, x[truth < 2], "a")
    _feed(b, x[truth >= 2], "b")
    for _ in range(rounds):
        topic.pump(a, leader=True)
        topic.pump(b, leader=False)
    return x, truth, a, b, topic


def test_a_silent_member_is_visible_and_left_out_of_merges():
    now = [0.0]
    x, truth, a, b, topic = _two_members(9, 3, silent_after_s=30.0, clock=lambda: now[0])
    assert a.model is not None and set(topic.announced()[1]["members"]) == {"a", "b"}
    now[0] = 20.0  # both last sent a third of silent_after ago: both re-send (heartbeat)
    topic.pump(b, leader=False)
    topic.pump(a, leader=True)
    topic.pump(a, leader=True)
    assert a.silence() == {"a": 0.0, "b": 0.0}
    now[0] = 60.0  # b says nothing more
    topic.pump(a, leader=True)
    topic.pump(a, leader=True)
    assert a.silence()["b"] == 40.0
    latest = topic.announced()[max(topic.announced())]
    assert latest["members"] == {"a": 600} and latest["version"] > 1


def test_a_member_taking_the_lead_proposes_nothing_until_a_summary_is_newer_than_the_latest_version():
    x, truth, a, b, topic = _two_members(12, 4)
    before = max(topic.announced())
    assert set(topic.announced()[before]["members"]) == {"a", "b"}
    merges = []  # a re-merge of what a version holds may still land on other centres (k-means restarts)
    b._merge = lambda merge=b._merge: (merges.append(1), merge())[1]  # type: ignore[method-assign]
    for _ in range(3):  # a hands the lead to b (partition 0 moved): b read every summary, all merged
        topic.pump(b, leader=True)
        topic.pump(a, leader=False)
    assert max(topic.announced()) == before and not merges
    _feed(a, x[truth < 2][:200], "a")  # a new round of summaries: b, leading now, merges it
    _feed(b, x[truth >= 2][:200], "b")
    for _ in range(3):
        topic.pump(a, leader=False)
        topic.pump(b, leader=True)
    latest = topic.announced()[max(topic.announced())]
    assert latest["version"] == before + 1 and latest["proposer"] == "b" and latest["members"] == {"a": 800, "b": 800}


def test_a_summary_whose_round_will_not_complete_is_merged_after_the_merge_wait():
    now = [0.0]
    x, truth, a, b, topic = _two_members(13, 4, merge_wait_s=1.0, clock=lambda: now[0])
    before = max(topic.announced())
    _feed(b, x[truth >= 2][:200], "b")  # b's last events; a's partition has run dry: no round completes
    topic.pump(b, leader=False)
    now[0] = 0.5
    topic.pump(a, leader=True)
    topic.pump(a, leader=True)
    assert max(topic.announced()) == before  # within the wait: the round may still complete
    now[0] = 1.5
    topic.pump(a, leader=True)
    topic.pump(a, leader=True)
    latest = topic.announced()[max(topic.announced())]
    assert latest["version"] == before + 1 and latest["members"] == {"a": 600, "b": 800}


def test_global_lineage_is_announced_once_by_the_proposer_and_known_to_every_member():
    x, truth = _blobs(10, k=4)
    a, b = _member("a"), _member("b")
    topic = Topic({"a": [0, 1]})
    _feed(a, x[truth < 2], "a")  # v1 from a alone: its 4 centres over groups 0, 1
    for _ in range(3):
        topic.pump(a, leader=True)
    topic.pump(b, leader=False)
    assert a.model.version == 1 and b.model.version == 1
    a.drain_lineage(), b.drain_lineage()
    _feed(b, x[truth >= 2], "b")  # groups 2, 3 arrive with b: v2 re-places two segments
    for _ in range(3):
        topic.pump(b, leader=False)
        topic.pump(a, leader=True)
    topic.pump(b, leader=False)
    va, vb = a.drain_lineage(), b.drain_lineage()
    assert va and [(e.kind, e.segments, e.model_version) for e in va] == [(e.kind, e.segments, e.model_version) for e in vb]
    assert all(e.announce for e in va) and not any(e.announce for e in vb)
    kinds = collections.Counter(e.kind for e in va)
    assert kinds["born"] + kinds["split"] == kinds["retired"] + kinds["merged"] >= 2, kinds
    ids = a.model.segment_ids
    assert len(set(ids.tolist())) == 4 and ids.max() >= 4  # new ids minted, never reused
    labels = nearest(x, a.model.centroids)
    assert adjusted_rand_index(truth, labels) >= 0.95


def test_a_dead_global_segment_is_reseeded_from_the_summaries():
    x, truth = _blobs(11, k=4)
    far = np.full((1, 16), 50.0, np.float32)
    init = np.vstack([_summary(x, 3, 1)[0], far])  # segment 3 sits where no summary point is
    pts, w = _summary(x, 8, 2)
    merged = cluster_summaries(pts, w, 4, init=init, rng=np.random.default_rng(0), restarts=0)
    assert np.abs(merged).max() < 10 and adjusted_rand_index(truth, nearest(x, merged)) >= 0.95


@pytest.mark.parametrize("clusterer", ["kmeans", "dbstream"])
def test_a_new_leader_continues_the_versions_without_gap_or_duplicate(clusterer):
    pipes = pipelines(3, clusterer=clusterer)
    topic = Topic({f"i{i}": [i] for i in range(3)})
    events = list(generate(SyntheticConfig(users=600, groups=4, events=24_000, seed=6)))
    run(pipes, topic, events, leader=lambda i, step: i == (0 if step < 20 else 1))  # i0 hands over at step 20
    applied = [m for m in topic.log if m["kind"] == "model"]
    announced = topic.announced()
    assert sorted(announced) == list(range(1, len(announced) + 1))
    assert len(applied) == len(announced)  # the new leader proposed each version once, from the latest
    proposers = [announced[v]["proposer"] for v in sorted(announced)]
    assert proposers[0] == "i0" and proposers[-1] == "i1" and proposers.count("i1") >= 3
    ids = [i for v in sorted(announced) for i in announced[v]["segment_ids"]]
    assert max(ids) < announced[max(announced)]["next_id"]


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


@pytest.mark.parametrize("clusterer", ["kmeans", "dbstream"])
def test_a_restarted_instance_starts_from_the_latest_version_and_does_not_reseed(clusterer):
    pipes = pipelines(2, clusterer=clusterer)
    topic = Topic({"i0": [0], "i1": [1]})
    events = list(generate(SyntheticConfig(users=300, groups=4, events=8_000, seed=5)))
    run(pipes, topic, events)
    latest = max(m["version"] for m in topic.log if m["kind"] == "model")
    fresh = pipelines(1, prefix="restarted", clusterer=clusterer)[0]
    topic.pump(fresh.segmenter, leader=True)  # reads the whole log first, then may speak
    assert fresh.segmenter.model.version == latest
    assert not fresh.segmenter.warming
    assert all(m["version"] != 1 for m in topic.log[-3:] if m["kind"] == "model")
    r = fresh.process_objects(events[:500])
    assert len(r.changes) and r.changes.model_version == latest
    assert fresh.segmenter.local.model is not None  # its local learner started: it summarises its users


def test_checkpoint_round_trip_keeps_the_local_learner_and_pending_users():
    p = pipelines(1)[0]
    p.process_objects(list(generate(SyntheticConfig(users=30, groups=4, events=300, seed=1))))
    state = p.segmenter.state_dict()
    assert len(state["pending_ids"]) == 30  # no global model yet: every user waits for one
    assert state["events"] == 300
    q = pipelines(1)[0]
    q.segmenter.load_state_dict(state)
    assert q.segmenter.seed_model(0.0)[0] == p.segmenter.seed_model(0.0)[0]
    with pytest.raises(ValueError):
        q.segmenter.load_state_dict({**state, "name": "kmeans"})


def test_a_checkpoint_whose_local_learner_has_k_centres_still_loads():
    """Written before summaries had 2k centres: the pending users stay, the local summary starts again."""
    p = pipelines(1)[0]
    p.process_objects(list(generate(SyntheticConfig(users=80, groups=4, events=1000, seed=2))))
    state = p.segmenter.state_dict()
    assert state["local"]["model"] is not None and len(state["counts"]) == 8
    old = OnlineKMeans(4, p.encoder.dim, warmup_users=60)
    old.add_warmup([f"w{i}" for i in range(60)], np.random.default_rng(0).normal(size=(60, p.encoder.dim)))
    old.seed_model(0.0)
    q = pipelines(1)[0]
    q.segmenter.load_state_dict({**state, "local": old.state_dict(), "counts": np.ones(4)})
    assert q.segmenter.waiting_users() == p.segmenter.waiting_users() and q.segmenter.local.model is None


class _ModelTopicConsumer:
    """The model topic as ModelSync's consumer sees it: records appended by every publisher, read in order."""

    def __init__(self, log: list) -> None:
        self.log, self.pos = log, 0

    def assign(self, tps) -> None:
        self.tp = tps[0]

    def seek_to_beginning(self, tp) -> None:
        self.pos = 0

    def poll(self, timeout_ms: int = 0, max_records: int = 1000) -> dict:
        from types import SimpleNamespace

        new = self.log[self.pos:self.pos + max_records]
        recs = [SimpleNamespace(value=v, key=None, headers=[], timestamp=0, topic=self.tp.topic, partition=0,
                                offset=self.pos + i) for i, v in enumerate(new)]
        self.pos += len(new)
        return {self.tp: recs} if recs else {}

    def highwater(self, tp) -> int:
        return len(self.log)

    def position(self, tp) -> int:
        return self.pos

    def close(self, autocommit: bool = False) -> None:
        pass


class _TopicPublisher:
    def __init__(self, log: list) -> None:
        self.log = log

    def send(self, topic, key, value, headers=None) -> None:
        self.log.append(value)


def test_model_sync_shows_how_long_each_member_has_been_silent(caplog):
    from prometheus_client import generate_latest

    from stream.observability.metrics import Metrics
    from stream.runtime.model_sync import ModelSync

    now = [0.0]
    x, truth = _blobs(12, k=4)
    log: list = []
    a, b = (_member(n, silent_after_s=30.0, clock=lambda: now[0]) for n in ("a", "b"))
    metrics = Metrics()
    settings = Settings(global_model=True)
    sync_a = ModelSync(settings, a, _TopicPublisher(log), metrics, _ModelTopicConsumer(log), input_partitions=2)
    sync_b = ModelSync(settings, b, _TopicPublisher(log), None, _ModelTopicConsumer(log), input_partitions=2)
    _feed(a, x[truth < 2], "a")
    _feed(b, x[truth >= 2], "b")
    for _ in range(3):
        sync_a.pump(leader=True, partitions=[0])
        sync_b.pump(leader=False, partitions=[1])
    assert a.model is not None and a.model.version == b.model.version == 1
    now[0] = 45.0  # a re-sends its summary (a heartbeat); b is stopped
    sync_a.pump(leader=True, partitions=[0])
    sync_a.pump(leader=True, partitions=[0])
    text = generate_latest(metrics.registry).decode()
    assert 'segstream_model_member_silent_seconds{member="b"} 45.0' in text
    assert 'segstream_model_member_silent_seconds{member="a"} 0.0' in text
    assert any("model member b silent" in r.getMessage() for r in caplog.records)
    now[0] = 400.0  # b silent for over ten times silent_after: an instance of the past, no series kept
    sync_a.pump(leader=True, partitions=[0])
    sync_a.pump(leader=True, partitions=[0])  # a reads its own heartbeat back
    text = generate_latest(metrics.registry).decode()
    assert 'member="b"' not in text and 'segstream_model_member_silent_seconds{member="a"}' in text


def test_a_member_whose_partitions_ran_dry_moves_its_users_off_a_segment_a_later_version_ended():
    pipes = pipelines(2)
    topic = Topic({"i0": [0], "i1": [1]})
    run(pipes, topic, list(generate(SyntheticConfig(users=300, groups=4, events=8_000, seed=5))))
    p = pipes[1]
    m = p.segmenter.model
    ended = int(max(p.users_per_segment(), key=p.users_per_segment().get))
    centroids = m.centroids.copy()
    centroids[list(m.segment_ids).index(ended)] = 100.0  # that segment ends, a new one far from every user begins
    ids = np.where(m.segment_ids == ended, p.segmenter._next_id, m.segment_ids)
    record = {**topic.announced()[m.version], "version": m.version + 1, "segment_ids": ids.tolist(),
              "centroids": centroids.astype("<f4").tobytes(), "next_id": int(ids.max()) + 1,
              "lineage": [{"kind": "retired", "segments": [ended], "parents": [], "detail": ""}]}
    assert p.segmenter.receive(record) is not None
    held = p.users_per_segment()[ended]
    moved = 0
    while (r := p.assign_waiting()) is not None and len(r.changes):  # idle ticks: no event arrives
        assert r.changes.model_version == m.version + 1 and (r.changes.previous == ended).all()
        moved += len(r.changes)
    assert moved == held and ended not in p.users_per_segment()
    assert p.assign_waiting() is None  # nothing left to do
