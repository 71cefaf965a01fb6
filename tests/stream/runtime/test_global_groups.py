"""Three ``segstream run --global-model true`` processes (separate local directories) over a log whose
planted groups live in different partitions (or whose users are hashed evenly): the model they share
recovers every partition's groups (k-means, and DBSTREAM at least as well as one DBSTREAM instance on
the same log), every version merged every member's summary, and every member applied the same
centroids for each version. Then the leader is killed while a late member joins: the
next owner of partition 0 continues the versions, and the newcomer starts from the latest one."""

from __future__ import annotations

import collections
import time

import msgpack
import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate, user_name
from global_model_topic import one_instance_ari
from helpers import (SegstreamProcess, log_records, owned_partitions, produce_by_partition, read_topic,
                     wait_committed, wait_partitions_spread)
from state.quality import adjusted_rand_index
from stream.kafka.clients import ensure_topics
from stream.settings import Settings

pytestmark = pytest.mark.integration

P = 3
GROUPS = 6
CFG = SyntheticConfig(users=900, groups=GROUPS, events=27_000, seed=1)


def _first_records(bootstrap: str, topic: str) -> tuple[dict[int, dict], list[dict]]:
    records = [msgpack.unpackb(r.value) for r in read_topic(bootstrap, topic, idle_s=2.0)]
    first: dict[int, dict] = {}
    for m in records:
        if m["kind"] == "model":
            first.setdefault(m["version"], m)  # the first record of a version is the announced model
    return first, records


# DBSTREAM at river's intersection factor (0.3) splits a planted group of this log into two heavy
# macro-clusters in some runs and not others, one instance alone as well (its score over one partition
# then swings between 0.75 and 1.0 with the learn sample); at 0.1 one instance keeps every group
# whole from 16 sampled embeddings per batch up, so a shortfall here is the merge's own
DBSTREAM_INTERSECTION = 0.1


def _args(topics: dict[str, str], clusterer: str = "kmeans") -> tuple[str, ...]:
    return ("--global-model", "true", "--clusterer", clusterer,
            "--dbstream-intersection", str(DBSTREAM_INTERSECTION), "--model-topic", "model-" + topics["group"],
            "--lineage-topic", "lineage-" + topics["group"], "--segments", str(GROUPS), "--warmup-users", "60",
            "--batch-max-events", "200", "--model-update-events", "600", "--model-first-wait-ms", "30000",
            "--checkpoint-interval-ms", "2000", "--log-format", "json", "--decode-process", "false")


@pytest.mark.parametrize("clusterer", ["kmeans", "dbstream"])
@pytest.mark.parametrize("keyed", [True, False], ids=["groups-keyed-to-partitions", "users-hashed"])
def test_three_members_share_a_model_that_keeps_every_partitions_groups(broker, topics, tmp_path, keyed, clusterer):
    model_topic, lineage_topic = "model-" + topics["group"], "lineage-" + topics["group"]
    ensure_topics(Settings(bootstrap=broker.bootstrap), {topics["input"]: P, topics["output"]: P, topics["dlq"]: 1})
    events = list(generate(CFG))
    part_of = (lambda e: e["group"] * P // GROUPS) if keyed else (lambda e: int(e["user_id"][1:]) % P)
    common = _args(topics, clusterer)
    names = ("a", "b", "c")
    group = [SegstreamProcess(broker.settings(topics), *common, "--instance-id", n, "--checkpoint-dir",
                              str(tmp_path / n)) for n in names]
    errs: dict[str, str] = {}
    changes = 0  # segment changes the members say they published
    try:
        wait_partitions_spread(group, P)  # one partition each before the log goes in
        want = produce_by_partition(broker.bootstrap, topics["input"], events, part_of)
        wait_committed(broker.bootstrap, topics["group"], topics["input"], want, group)
        quiet, _ = _first_records(broker.bootstrap, model_topic)  # read once the topic was idle for 2 s
        time.sleep(2.0)  # every member pumps the model topic each turn of its loop (idle turns: 200 ms)
        for n, p in zip(names, group):
            code, summary, err = p.terminate()
            assert code == 0, err[-3000:]
            errs[n], changes = err, changes + summary["segment_changes"]
    finally:
        for p in group:
            p.kill()

    first, records = _first_records(broker.bootstrap, model_topic)
    assert sorted(first) == list(range(1, len(first) + 1)) and len(first) >= 5
    # every version, v1 included (it waited for every partition's summary), merged every member's summary
    for v, m in first.items():
        assert set(m["members"]) == set(names) and all(n > 0 for n in m["members"].values()), (v, m["members"])
    assert collections.Counter(m["instance"] for m in records if m["kind"] == "summary").keys() == set(names)
    # every member applied exactly the announced centroids of each version it applied, the latest included
    latest = max(first)
    assert latest == max(quiet)  # nothing more to merge once every event was consumed
    for n, err in errs.items():
        applied = log_records(err, "model applied")
        assert all(a["digest"] == first[a["model_version"]]["digest"] for a in applied), n
        assert applied and applied[-1]["model_version"] == latest, (n, applied[-1:])

    out = [msgpack.unpackb(r.value) for r in read_topic(broker.bootstrap, topics["output"], expected=changes)
           if r.value is not None]
    assert len(out) >= changes
    assert all(e["model_version"] in first for e in out)  # only announced versions
    final = {e["user_id"]: e["segment"] for e in out}  # the last segment each user was given
    planted = CFG.group_of_users()
    users = sorted(final)
    missing = sorted({user_name(u) for u in range(CFG.users)} - set(users))
    assert not missing, (len(missing), missing[:10], len(out), changes)
    truth = np.array([planted[int(u[1:])] for u in users])
    labels = np.array([final[u] for u in users])
    part = np.array([part_of({"group": int(g), "user_id": u}) for g, u in zip(truth, users)])
    scores = [adjusted_rand_index(truth[part == p], labels[part == p]) for p in range(P)]
    overall = adjusted_rand_index(truth, labels)
    print(f"ARI {overall:.3f}, per partition {[round(s, 3) for s in scores]}, versions {latest}, "
          f"v1 members {first[1]['members']}, v{latest} members {first[latest]['members']}")
    want, want_per = 0.95, [0.95] * P
    if clusterer == "dbstream":
        # the bar is one DBSTREAM instance on the same log (1.000 at this intersection factor), less a small margin
        one, one_per = one_instance_ari(CFG, lambda e, n: part_of(e), P, Settings(
            clusterer="dbstream", segments=GROUPS, warmup_users=60, model_update_events=600,
            dbstream_intersection=DBSTREAM_INTERSECTION))
        want, want_per = min(want, one - 0.02), [min(0.95, s - 0.02) for s in one_per]
        print(f"one DBSTREAM instance: ARI {one:.3f}, per partition {[round(s, 3) for s in one_per]}")
    table = {int(s): dict(collections.Counter(truth[labels == s].tolist())) for s in np.unique(labels)}  # segment: groups
    assert overall >= want and all(s >= w for s, w in zip(scores, want_per)), (overall, scores, want, want_per,
                                                                                 str(table), first[latest]["segment_ids"])
    if keyed:  # no segment holds groups of two partitions (a group: over 5% of the segment's users)
        for s in np.unique(labels):
            groups, n = np.unique(truth[labels == s], return_counts=True)
            assert len({int(g) * P // GROUPS for g in groups[n > 0.05 * n.sum()]}) == 1, (s, groups, n)

    # the lineage of global segments was published once, by the member that proposed each version
    lineage = [msgpack.unpackb(r.value) for r in read_topic(broker.bootstrap, lineage_topic, idle_s=2.0)]
    keys = [(e["kind"], tuple(e["segments"]), e["model_version"]) for e in lineage]
    assert len(keys) == len(set(keys))
    announced = [(e["kind"], tuple(e["segments"]), v) for v, m in first.items() for e in m["lineage"]]
    assert sorted(keys) == sorted(announced)
    born = {s for e in lineage if e["kind"] in ("born", "split") for s in e["segments"]}
    assert set(labels.tolist()) <= born


def test_the_next_leader_continues_the_versions_and_a_late_member_starts_from_the_latest(broker, topics, tmp_path):
    model_topic = "model-" + topics["group"]
    ensure_topics(Settings(bootstrap=broker.bootstrap), {topics["input"]: P, topics["output"]: P, topics["dlq"]: 1})
    events = list(generate(CFG))
    part_of = lambda e: int(e["user_id"][1:]) % P  # noqa: E731
    settings = broker.settings(topics)
    group = [SegstreamProcess(settings, *_args(topics), "--instance-id", n, "--checkpoint-dir", str(tmp_path / n))
             for n in ("a", "b")]
    errs: list[str] = []
    late = None
    try:
        wait_partitions_spread(group, P)
        want = collections.Counter(produce_by_partition(broker.bootstrap, topics["input"], events[:len(events) // 2],
                                                        part_of))
        wait_committed(broker.bootstrap, topics["group"], topics["input"], dict(want), group)
        before, _ = _first_records(broker.bootstrap, model_topic)
        assert len(before) >= 3
        leader = next(i for i, p in enumerate(group) if 0 in owned_partitions(p))
        group[leader].proc.kill()  # SIGKILL: no last proposal, no goodbye
        errs.append(group[leader].proc.communicate()[1])
        late = SegstreamProcess(settings, *_args(topics), "--instance-id", "late", "--checkpoint-dir",
                                str(tmp_path / "late"))
        survivors = [group[1 - leader], late]
        want.update(produce_by_partition(broker.bootstrap, topics["input"], events[len(events) // 2:], part_of))
        wait_committed(broker.bootstrap, topics["group"], topics["input"], dict(want), survivors)
        for p in survivors:
            code, _, err = p.terminate()
            assert code == 0, err[-3000:]
            errs.append(err)
    finally:
        for p in group + ([late] if late else []):
            p.kill()

    first, records = _first_records(broker.bootstrap, model_topic)
    versions = [m["version"] for m in records if m["kind"] == "model"]
    assert sorted(first) == list(range(1, len(first) + 1))
    # in log order no record skips a version; a second record of a version (a proposal racing a handover
    # of partition 0) is ignored by everyone: each member applies each version once, in order
    assert all(v <= max(versions[:i], default=0) + 1 for i, v in enumerate(versions)), versions
    for err in errs:
        seen = [a["model_version"] for a in log_records(err, "model applied")]
        assert seen == sorted(set(seen)), seen
    killed = before[max(before)]["proposer"]
    after = [first[v] for v in sorted(first) if v > max(before)]
    assert len(after) >= 2 and all(m["proposer"] != killed for m in after), (killed, [m["proposer"] for m in after])
    ids = [i for v in sorted(first) for i in first[v]["segment_ids"]]
    assert max(ids) < first[max(first)]["next_id"]
    # the newcomer read the model topic to the version announced before it started, or a later one, before
    # it applied anything else or published a segment
    applied = log_records(errs[-1], "model applied")
    assert applied and applied[0]["model_version"] >= max(before), applied[:1]
    assert [a["model_version"] for a in applied] == sorted(a["model_version"] for a in applied)
    wrong = [a for err in errs for a in log_records(err, "model applied")
             if a["digest"] != first[a["model_version"]]["digest"]]
    assert not wrong, wrong
