"""Unit level: the global model with DBSTREAM (members' micro-clusters merged the way DBSTREAM makes
macro-clusters), with a list standing in for the model topic."""

from __future__ import annotations

import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from global_model_topic import Topic, by_id, final_labels, mixing, one_instance_ari, pipelines, run
from state.dbstream import OnlineDBSTREAM
from state.global_dbstream import GlobalDBSTREAM
from state.global_model import GlobalKMeans, model_digest
from state.quality import adjusted_rand_index
from state.segments import assign, nearest
from stream.settings import Settings

DIM = 4
CENTRES = np.eye(DIM, dtype=np.float32) * 2.0  # four groups, 2.8 apart; micro-cluster radius 0.3


def _member(name: str) -> GlobalDBSTREAM:
    local = OnlineDBSTREAM(DIM, radius=0.3, warmup_users=80, recluster_events=80, learn_sample=80, seed=len(name))
    return GlobalDBSTREAM(local, name, first_wait_s=0.0)


def _blobs(groups: list[int], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    truth = np.repeat(np.array(groups), n)
    return (CENTRES[truth] + rng.normal(0, 0.05, (len(truth), DIM))).astype(np.float32), truth


def _rounds(members: dict[str, list[int]], rounds: int, seed: int = 0) -> tuple[Topic, dict[str, GlobalDBSTREAM]]:
    """Every member sees only its groups: warm-up, then ``rounds`` rounds of learning, each member sending
    its summary and the leader (the first member) merging once per round."""
    rng = np.random.default_rng(seed)
    segs = {name: _member(name) for name in members}
    topic = Topic({name: [i] for i, name in enumerate(members)})
    for name, groups in members.items():
        x, _ = _blobs(groups, 40, rng)
        segs[name].add_warmup([f"{name}{i}" for i in range(len(x))], x, event_time=1.0, events=len(x))
    for r in range(rounds + 1):
        for _ in range(2):  # the summaries reach the leader, then the leader's proposal reaches everyone
            for i, s in enumerate(segs.values()):
                topic.pump(s, leader=i == 0)
        for name, groups in members.items():
            s = segs[name]
            if s.model is None:
                continue
            if s.warming:
                s.seed_model(float(r))
            x, _ = _blobs(groups, 40, rng)
            s.learn(x)
            s.tick(len(x), float(r + 2), {})
    for s in segs.values():
        topic.pump(s, leader=False)
    return topic, segs


def test_two_members_seeing_different_groups_keep_each_group_as_its_own_segment():
    topic, segs = _rounds({"a": [0, 1], "b": [2, 3]}, rounds=3)
    announced = topic.announced()
    assert announced[1]["clusterer"] == "dbstream" and set(announced[1]["members"]) == {"a", "b"}
    x, truth = _blobs([0, 1, 2, 3], 50, np.random.default_rng(9))
    for s in segs.values():
        m = s.model
        assert m.k == 4, m.centroids
        labels = m.segment_ids[nearest(x, m.centroids)]
        assert adjusted_rand_index(truth, labels) == 1.0
        assert model_digest(m.centroids, m.segment_ids) == announced[m.version]["digest"]


def test_a_group_every_member_sees_is_one_segment():
    _, segs = _rounds({"a": [0, 1, 2], "b": [0, 1, 2], "c": [2, 3]}, rounds=3)
    m = segs["b"].model
    assert m.k == 4, m.centroids
    assert sorted(nearest(CENTRES, m.centroids).tolist()) == [0, 1, 2, 3]


def test_ids_stay_stable_across_versions_on_stationary_input():
    topic, segs = _rounds({"a": [0, 1], "b": [2, 3]}, rounds=8)
    announced = topic.announced()
    assert len(announced) >= 4, sorted(announced)
    first = set(announced[1]["segment_ids"])
    for v, m in announced.items():
        assert set(m["segment_ids"]) == first, (v, m["segment_ids"])
        if v > 1:
            assert m["lineage"] == [], (v, m["lineage"])
    assert [e.kind for e in segs["b"].drain_lineage()] == ["born"] * 4
    kinds = [(e.kind, e.announce) for e in segs["a"].drain_lineage()]
    assert kinds == [("born", True)] * 4  # the proposer publishes the births; the others know them


def test_a_group_that_fades_out_ends_with_lineage_and_new_ids_are_fresh():
    topic, segs = _rounds({"a": [0, 1], "b": [2, 3]}, rounds=3)
    before = segs["a"].model
    rng = np.random.default_rng(5)
    for r in range(40):  # member b's users move: group 3 is gone, group 2 stays
        for name, groups in (("a", [0, 1]), ("b", [2])):
            x, _ = _blobs(groups, 40, rng)
            segs[name].learn(x)
            segs[name].tick(len(x), 10.0 + r, {})
        for _ in range(2):
            for i, s in enumerate(segs.values()):
                topic.pump(s, leader=i == 0)
    after = segs["b"].model
    assert after.k == 3
    gone = set(before.segment_ids.tolist()) - set(after.segment_ids.tolist())
    assert len(gone) == 1
    ended = [e for v, m in topic.announced().items() for e in m["lineage"] if e["kind"] in ("retired", "merged")]
    assert {s for e in ended for s in e["segments"]} == gone


@pytest.mark.parametrize("keyed", [True, False], ids=["groups-keyed-to-partitions", "users-hashed"])
def test_three_members_recover_every_partitions_groups_as_one_dbstream_instance_does(keyed):
    """Groups 0-1 live in partition 0, 2-3 in 1, 4-5 in 2 (or users hashed evenly): the merged model
    recovers them at least as well as one DBSTREAM instance over the whole log (DBSTREAM itself keeps a
    light extra segment or two, so that is the bar, less a small margin), and no segment pairs groups
    of different partitions."""
    cfg = SyntheticConfig(users=900, groups=6, events=27_000, seed=1)
    part = (lambda e, n: e["group"] // 2) if keyed else by_id
    pipes = pipelines(3, segments=6, warmup_users=100, model_update_events=1000, clusterer="dbstream")
    assert all(isinstance(p.segmenter, GlobalDBSTREAM) for p in pipes)
    topic = Topic({f"i{i}": [i] for i in range(3)})
    run(pipes, topic, list(generate(cfg)), part=part)
    truth, labels, member = final_labels(pipes, cfg)
    overall, per = one_instance_ari(cfg, part, 3, Settings(segments=6, warmup_users=100, model_update_events=1000,
                                                              clusterer="dbstream"))
    got = adjusted_rand_index(truth, labels)
    got_per = [adjusted_rand_index(truth[member == i], labels[member == i]) for i in range(3)]
    print(f"global ARI {got:.3f} per member {[round(g, 3) for g in got_per]}; one instance {overall:.3f} "
          f"per partition {[round(s, 3) for s in per]}; versions {len(topic.announced())}")
    assert got >= min(0.95, overall - 0.02), (got, overall)
    assert all(g >= min(0.95, s - 0.02) for g, s in zip(got_per, per)), (got_per, per)
    if keyed:
        assert not mixing(truth, labels, member)
    announced = topic.announced()
    assert len(announced) >= 5
    for v, m in announced.items():
        assert set(m["members"]) == {"i0", "i1", "i2"}, (v, m["members"])
    x = np.random.default_rng(0).normal(size=(300, pipes[0].encoder.dim)).astype(np.float32)
    segs = [assign(p.segmenter.model, x, np.full(len(x), -1), 0.05)[0] for p in pipes]
    assert all(np.array_equal(segs[0], s) for s in segs[1:])


def test_members_of_another_clusterer_ignore_the_records():
    _, segs = _rounds({"a": [0, 1], "b": [2, 3]}, rounds=1)
    km = pipelines(1)[0].segmenter
    assert isinstance(km, GlobalKMeans) and not isinstance(km, GlobalDBSTREAM)
    record = {**segs["a"]._last_summary, "dim": km.dim}
    km.receive(record)
    assert km.ignored == 1 and not km._summaries


def test_checkpoint_round_trip_keeps_the_local_micro_clusters_and_pending_users():
    p = pipelines(1, clusterer="dbstream")[0]
    p.process_objects(list(generate(SyntheticConfig(users=120, groups=4, events=1500, seed=1))))
    state = p.segmenter.state_dict()
    assert len(state["pending_ids"]) == 120 and state["local"]["model"] is not None
    q = pipelines(1, clusterer="dbstream")[0]
    q.segmenter.load_state_dict(state)
    a, b = p.segmenter.local.micro_summary(), q.segmenter.local.micro_summary()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert q.segmenter.waiting_users() == p.segmenter.waiting_users()
    with pytest.raises(ValueError):
        q.segmenter.load_state_dict({**state, "name": "kmeans-global"})
