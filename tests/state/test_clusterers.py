"""Online segments measured against planted groups and batch k-means; stability, replay,
no collapsed segments, DBSTREAM with stable ids explained by lineage, lineage/profile contracts."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import numpy as np
import pytest

from eventlogs.recorded import write_events
from eventlogs.synthetic import SyntheticConfig, generate
from evaluation.planted import run_planted
from state.identity import match_ids
from stream.contracts.user_segments import ContractError
from stream.runtime.pipeline import Pipeline
from stream.runtime.replay import replay_log
from stream.contracts.lineage_profiles import decode_lineage, decode_profile, encode_lineage, encode_profiles
from stream.settings import Settings

DAY = 86400.0
BASE = Settings(segments=8, warmup_users=200, metrics_port=0, seed=0)


def test_online_ari_is_at_least_95_percent_of_batch_kmeans_on_planted_groups():
    cfg = SyntheticConfig(users=2000, groups=8, events=100_000, seed=0, duration_s=14 * DAY)
    r = run_planted(cfg, replace(BASE, half_life_s=DAY, max_users=4000), batch=5000, checkpoint_events=10_000)
    s = r["summary"]
    last = r["points"][-3:]
    assert s["batch_ari_mean"] > 0.5  # the embeddings do carry the groups
    assert s["ari_ratio"] >= 0.95, s
    assert all(q["ari"] >= 0.95 * q["batch_ari"] for q in last), last


def test_after_an_abrupt_drift_ari_recovers_within_three_half_lives():
    cfg = SyntheticConfig(users=2000, groups=8, events=120_000, seed=1, duration_s=14 * DAY, drift_at=0.5,
                          drift_groups=3)
    r = run_planted(cfg, replace(BASE, half_life_s=DAY, max_users=4000), batch=5000, checkpoint_events=10_000)
    s = r["summary"]
    assert s["pre_drift_ari"] > 0.8, s
    assert s["min_ari_after_drift"] < s["pre_drift_ari"]  # the drift did disturb the segments
    assert s["recovery_half_lives"] is not None and s["recovery_half_lives"] <= 3.0, s


def test_stationary_stream_after_warm_up_moves_fewer_than_1_percent_of_users_per_10k_events():
    cfg = SyntheticConfig(users=2000, groups=8, events=120_000, seed=2, duration_s=14 * DAY)
    r = run_planted(cfg, replace(BASE, half_life_s=7 * DAY, max_users=4000, hysteresis=0.1), batch=5000,
                    checkpoint_events=10_000)
    after_warmup = [q for q in r["points"] if q["events"] > 60_000]
    rates = [q["moves_per_10k"] for q in after_warmup]
    assert len(rates) >= 5 and max(rates) < 0.01, rates
    assert min(q["ari"] for q in after_warmup) > 0.8


def test_replaying_the_same_log_twice_gives_byte_identical_segment_changes(tmp_path):
    log = tmp_path / "log.msgpack"
    write_events(log, generate(SyntheticConfig(users=600, groups=4, events=30_000, seed=3, drift_at=0.5,
                                               drift_groups=2)))
    settings = replace(BASE, segments=4, warmup_users=100, model_update_events=2000, batch_max_events=1000)
    outs = []
    for run in range(2):
        out = tmp_path / f"segments-{run}.msgpack"
        replay_log(settings, log, out, clock="event")
        outs.append(out.read_bytes())
    assert len(outs[0]) > 10_000 and outs[0] == outs[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_collapsed_segments_every_segment_holds_2_percent_of_users(seed):
    evs = list(generate(SyntheticConfig(users=3000, groups=8, events=90_000, seed=seed)))
    p = Pipeline.from_settings(replace(BASE, seed=seed), now=lambda: 2e9)
    for i in range(0, len(evs), 5000):
        p.process_objects(evs[i : i + 5000])
    sizes = np.array(list(p.users_per_segment().values()))
    assert len(sizes) == 8 and sizes.min() / sizes.sum() >= 0.02, p.users_per_segment()


def _lineage_explains_ids(settings: Settings, evs: list, batch: int) -> tuple[Pipeline, dict[str, int], int]:
    """Replay; every id a change names was announced (born/split) before, none after it ended."""
    p = Pipeline.from_settings(settings, now=lambda: 2e9)
    announced: set[int] = set()
    ended: set[int] = set()
    kinds: dict[str, int] = {}
    ids_of_version: dict[int, set[int]] = {}
    kept = 0  # ids that survived a model update
    for i in range(0, len(evs), batch):
        res = p.process_objects(evs[i : i + batch])
        if len(res.changes):  # decided by the model the change names (the one before this batch's update)
            assert set(res.changes.segments.tolist()) <= ids_of_version.get(res.changes.model_version, set(
                p.model.segment_ids.tolist()))
        for key, value in encode_lineage(res.lineage):  # through the wire format
            ev = decode_lineage(value)
            kinds[ev["kind"]] = kinds.get(ev["kind"], 0) + 1
            assert int(key) == ev["segments"][0]
            if ev["kind"] in ("born", "split"):
                assert not set(ev["segments"]) & (announced | ended), "an id was reused"
                announced.update(ev["segments"])
            else:
                assert set(ev["segments"]) <= announced
                ended.update(ev["segments"])
        live = set(p.model.segment_ids.tolist())
        assert live <= announced - ended, (live, announced, ended)
        if p.model.version - 1 in ids_of_version and p.model.version not in ids_of_version:
            kept += len(live & ids_of_version[p.model.version - 1])
        ids_of_version[p.model.version] = live
    return p, kinds, kept


def test_dbstream_ids_are_stable_and_every_appearing_or_disappearing_id_has_a_lineage_event():
    evs = list(generate(SyntheticConfig(users=1500, groups=4, events=60_000, seed=4, drift_at=0.5, drift_groups=2)))
    settings = replace(BASE, clusterer="dbstream", dbstream_radius=0.5, dbstream_fading=0.002, learn_sample=64)
    p, kinds, kept = _lineage_explains_ids(settings, evs, 2500)
    assert p.model.version > 5 and p.model.k >= 2
    assert kinds.get("born", 0) >= 1
    # river renumbers its macro-clusters at every recluster; matched ones keep their id
    assert kept > sum(kinds.values()), (kept, kinds)


def test_kmeans_lineage_explains_ids_under_drift():
    evs = list(generate(SyntheticConfig(users=1500, groups=8, events=60_000, seed=5, drift_at=0.5, drift_groups=3)))
    p, kinds, kept = _lineage_explains_ids(replace(BASE, model_update_events=3000), evs, 2500)
    # 8 seeded; a re-seeded centre far from every previous one is born too
    assert kinds["born"] >= 8 and p.model.version > 10 and kept > 8 * (p.model.version - 2)


def test_hungarian_matching_keeps_ids_when_clusters_are_renumbered():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(6, 4)).astype(np.float32) * 5
    perm = rng.permutation(6)
    new = old[perm] + rng.normal(scale=0.05, size=(6, 4)).astype(np.float32)
    m = match_ids(old, np.arange(10, 16), new, next_id=16, max_distance=1.0)
    assert m.ids.tolist() == (10 + perm).tolist() and m.events == [] and m.next_id == 16
    # one cluster gone, one far away new: retired + born, ids never reused
    m = match_ids(old, np.arange(10, 16), np.concatenate([new[:5], [[100.0] * 4]]).astype(np.float32),
                  next_id=16, max_distance=1.0)
    assert sorted((e.kind, e.segments) for e in m.events) == [("born", (16,)), ("retired", (int(10 + perm[5]),))]


def test_profiles_are_published_on_schedule_and_follow_their_schema():
    evs = list(generate(SyntheticConfig(users=800, groups=4, events=20_000, seed=6)))
    p = Pipeline.from_settings(replace(BASE, segments=4, warmup_users=100, profile_every_events=5000,
                                       model_update_events=2500), now=lambda: 2e9)
    batches, versions = [], []
    for i in range(0, len(evs), 1000):
        batches.append(p.process_objects(evs[i : i + 1000]))
        versions.append(p.model.version)
    due = [(r, v) for r, v in zip(batches, versions) if r.profiles]
    assert 3 <= len(due) <= 4
    # stamped with the version whose segments they describe, also when that version was published in the batch
    assert any(r.new_model is not None for r, _ in due)
    for r, v in due:
        assert {pr["model_version"] for pr in decode_all(encode_profiles(r.profiles)).values()} == {v}
    r, _ = due[-1]
    profiles = decode_all(encode_profiles(r.profiles))
    assert set(profiles) == set(p.model.segment_ids.tolist())
    assert sum(pr["size"] for pr in profiles.values()) == sum(p.users_per_segment().values())
    items = {e["item_id"] for e in evs}
    for seg, pr in profiles.items():
        assert pr["top_categories"] and set(pr["centroid"]) == {"norm", "top_dims"}
        # top items by the input's own ids, heaviest first
        assert pr["top_items"] and {it for it, _ in pr["top_items"]} <= items
        weights = [w for _, w in pr["top_items"]]
        assert weights == sorted(weights, reverse=True)
        rows = p.store.live_rows()
        rows = rows[p.store.segment[rows] == seg]
        assert pr["mean_distance"] == pytest.approx(float(p.store.distance[rows].mean()), rel=1e-4)
    bad = msgpack.packb({**profiles[next(iter(profiles))], "schema": 1})  # schema 1 named items by token
    with pytest.raises(ContractError):
        decode_profile(bad)


def decode_all(encoded: list) -> dict:
    return {int(k): decode_profile(v) for k, v in encoded}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_collapsed_segments_on_movielens_k8(movielens_dir, tmp_path, seed):
    from eventlogs.movielens import iter_movielens_events

    log = tmp_path / "ml.msgpack"
    write_events(log, iter_movielens_events(movielens_dir))
    settings = replace(BASE, seed=seed)
    p = Pipeline.from_settings(settings, now=lambda: float("inf"))
    replay_log(settings, log, None, clock="event", pipeline=p)
    sizes = np.array(list(p.users_per_segment().values()))
    assert sizes.sum() == 610 and len(sizes) == 8
    assert sizes.min() / sizes.sum() >= 0.02, p.users_per_segment()


def _lineage_by_version(settings: Settings, cfg: SyntheticConfig, batch: int = 2500) -> tuple[int, list]:
    p = Pipeline.from_settings(settings, now=lambda: 2e9)
    evs = list(generate(cfg))
    events = []
    for i in range(0, len(evs), batch):
        events += p.process_objects(evs[i : i + batch]).lineage
    return p.model.version, events


@pytest.mark.parametrize("clusterer", ["kmeans", "dbstream"])
def test_stationary_log_after_warm_up_at_most_one_birth_or_end_per_20_versions(clusterer):
    cfg = SyntheticConfig(users=2000, groups=4, events=300_000, seed=0)
    settings = replace(BASE, segments=4, model_update_events=5000, clusterer=clusterer, dbstream_radius=0.5,
                       dbstream_fading=0.002, learn_sample=64)
    versions, events = _lineage_by_version(settings, cfg)
    warm = 30  # DBSTREAM's densities settle over ~10 fading half-lives of learned points
    late = [e for e in events if e.model_version > warm]
    assert versions - warm >= 20
    assert len(late) <= (versions - warm) // 20, [(e.kind, e.segments, e.model_version) for e in late]
    assert {e.kind for e in events if e.model_version == 1} == {"born"}


def _drifting_blobs(rng: np.random.Generator, n: int, moved: bool) -> np.ndarray:
    """Three blobs; with ``moved`` the first one's users are somewhere else entirely."""
    centres = np.array([[0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0]], np.float32)
    if moved:
        centres[0] = [0, 0, 3, 3]
    return (centres[rng.integers(0, 3, n)] + rng.normal(scale=0.1, size=(n, 4))).astype(np.float32)


@pytest.mark.parametrize("clusterer", ["kmeans", "dbstream"])
def test_after_an_abrupt_drift_lineage_says_which_segment_ended_and_which_appeared(clusterer):
    from state.dbstream import OnlineDBSTREAM
    from state.kmeans import OnlineKMeans

    rng = np.random.default_rng(0)
    seg = (OnlineKMeans(3, 4, warmup_users=300, update_every_events=2000, seed=0) if clusterer == "kmeans" else
           OnlineDBSTREAM(4, radius=0.5, fading_factor=0.01, warmup_users=300, recluster_events=2000, seed=0,
                          learn_sample=64))
    seg.add_warmup([f"u{i}" for i in range(300)], _drifting_blobs(rng, 300, False))
    seg.seed_model(0.0)
    for t in range(40):
        seg.learn(_drifting_blobs(rng, 1000, False))
        seg.tick(1000, float(t), {})
    before = seg.model
    seg.drain_lineage()
    for t in range(40, 80):
        seg.learn(_drifting_blobs(rng, 1000, True))
        seg.tick(1000, float(t), {})
    events = seg.drain_lineage()
    old_blob = before.segment_ids[np.linalg.norm(before.centroids - [0, 0, 0, 0], axis=1).argmin()]
    ended = {s for e in events if e.kind in ("retired", "merged") for s in e.segments}
    appeared = {s for e in events if e.kind in ("born", "split") for s in e.segments}
    assert old_blob in ended, events
    new_blob = seg.model.segment_ids[np.linalg.norm(seg.model.centroids - [0, 0, 3, 3], axis=1).argmin()]
    assert np.linalg.norm(seg.model.centroids - [0, 0, 3, 3], axis=1).min() < 0.3 and new_blob in appeared
    unmoved = [before.segment_ids[np.linalg.norm(before.centroids - c, axis=1).argmin()] for c in ([3, 0, 0, 0], [0, 3, 0, 0])]
    assert set(unmoved) <= set(seg.model.segment_ids.tolist()) and not set(unmoved) & (ended | appeared)


def test_kmeans_ids_follow_their_users_when_the_learner_renumbers_its_centres():
    from state.kmeans import OnlineKMeans

    def id_at(model, centre):
        return int(model.segment_ids[np.linalg.norm(model.centroids - np.float32(centre), axis=1).argmin()])

    rng = np.random.default_rng(1)
    km = OnlineKMeans(3, 4, warmup_users=300, update_every_events=1000, seed=0)
    km.add_warmup([f"u{i}" for i in range(300)], _drifting_blobs(rng, 300, False))
    km.seed_model(0.0)
    km.drain_lineage()
    blobs = ([0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0])
    before = [id_at(km.model, c) for c in blobs]
    assert len(set(before)) == 3
    km._set_learner_centres(km.learner_centroids()[[2, 0, 1]])  # the same centres at other positions
    km.learn(_drifting_blobs(rng, 1000, False))
    model = km.tick(1000, 1.0, {})
    assert model is not None and model.version == 2
    assert [id_at(model, c) for c in blobs] == before and km.drain_lineage() == []
