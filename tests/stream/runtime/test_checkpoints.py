"""Snapshots are complete (a restored pipeline continues bit-exactly), tied to offsets, and safe to load."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from state.user_store import COLUMNS
from stream.runtime.checkpoints import CheckpointStore, pack, unpack
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings

SETTINGS = Settings(segments=4, warmup_users=40, model_update_events=300, max_users=150, dedup_window=5000, seed=3)


def _records(n: int = 3000) -> list[bytes]:
    evs = list(generate(SyntheticConfig(users=220, groups=4, events=n, seed=5)))
    for i, e in enumerate(evs):
        e["event_id"] = f"e{i % (n - 40)}"  # the last 40 events repeat early ids: dropped
        if i % 97 == 13:
            evs[i] = {"user_id": e["user_id"], "action": "delete", "ts": e["ts"]}
    return [msgpack.packb(e) for e in evs]


def _run(p: Pipeline, raws: list[bytes], start: int, stop: int, B: int = 250) -> list:
    out = []
    for i in range(start, stop, B):
        chunk = raws[i : min(i + B, stop)]
        r = p.process_records(chunk, np.full(len(chunk), (i // B) % 3, dtype=np.int32))
        out.append((r.changes.user_ids, r.changes.segments.tolist(), r.changes.seq.tolist(), r.erased, r.duplicates,
                    [(e.kind, e.segments, e.parents) for e in r.lineage], r.profiles))
    return out


def _store_state(p: Pipeline) -> dict:
    s = p.store
    rows = np.sort(s.live_rows())
    return {"ids": s.user_ids(rows), "rows": rows.tolist(), **{c: getattr(s, c)[rows].copy() for c in COLUMNS},
            "t0": s.t0}


SEGMENTERS = {  # both clusterers, with dwell and profiles, restore bit-exactly
    "kmeans": SETTINGS,
    "kmeans-dwell-profiles": replace(SETTINGS, dwell_s=3600.0, profile_every_events=700),
    "dbstream": replace(SETTINGS, clusterer="dbstream", dbstream_radius=0.25, dwell_s=3600.0, profile_every_events=700),
}


@pytest.mark.parametrize("variant", list(SEGMENTERS))
def test_restored_pipeline_continues_bit_exactly(tmp_path, variant):
    SETTINGS = SEGMENTERS[variant]
    raws = _records()
    ref = Pipeline.from_settings(SETTINGS, now=lambda: 2e9)
    ref_out = _run(ref, raws, 0, len(raws))

    first = Pipeline.from_settings(SETTINGS, now=lambda: 2e9)
    out = _run(first, raws, 0, 1500)
    assert len(first.store) > 0 and first.model is not None and len(first.dedup) > 0
    store = CheckpointStore(tmp_path, "g", "t")
    parts = {p: (1500, first.store.export_rows(first.store.rows_of_partition(p))) for p in range(3)}
    ckpt = store.write(first.global_state(), parts)
    assert sum(len(b["ids"]) for _, b in parts.values()) == len(first.store)  # every user belongs to a partition

    second = Pipeline.from_settings(SETTINGS, now=lambda: 2e9)
    second.load_global_state(store.load_global(ckpt))
    for p in range(3):
        snap = store.best(p, committed=1500)
        assert snap is not None and snap.offset == 1500
        second.store.import_rows(snap.load()["users"], keep_rows=True)
    second.store.set_layout(store.load_global(ckpt)["layout"])
    second.recount()
    assert second.users_per_segment() == first.users_per_segment()
    out += _run(second, raws, 1500, len(raws))

    assert out == ref_out
    n = len(raws)
    evs = [msgpack.unpackb(r) for r in raws]
    deletes = [(i, e["user_id"]) for i, e in enumerate(evs) if e["action"] == "delete"]

    def erased_between(j: int, i: int) -> bool:  # a delete forgets the user's event ids: no longer a repeat
        return any(j < k < i and u == evs[j]["user_id"] for k, u in deletes)

    repeats = [i for i in range(n - 40, n) if i % 97 != 13 and (i - (n - 40)) % 97 != 13  # deletes carry no id
               and not erased_between(i - (n - 40), i)]
    assert sum(o[4] for o in out) == len(repeats) > 25
    a, b = _store_state(ref), _store_state(second)
    assert a["ids"] == b["ids"] and a["rows"] == b["rows"] and a["t0"] == b["t0"]
    for c in COLUMNS:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)
    np.testing.assert_array_equal(ref.model.centroids, second.model.centroids)
    assert ref.model.version == second.model.version > 1


def test_snapshot_newer_than_the_commit_is_not_applied_and_pruning_keeps_the_committed_one(tmp_path):
    ticks = iter(range(1, 100))
    store = CheckpointStore(tmp_path, "g", "t", clock_ns=lambda: next(ticks))
    empty = {"ids": [], "rows": np.zeros(0, np.int64), "t0": None}
    store.write({}, {0: (100, empty), 1: (40, empty)})
    store.write({}, {0: (200, empty), 1: (40, empty)})
    store.write({}, {0: (300, empty)})  # persisted, then killed before the commit
    assert store.best(0, committed=200).offset == 200
    assert store.best(0, committed=150).offset == 100
    assert store.best(0, committed=None) is None  # nothing committed: nothing applied
    assert store.best(0, committed=50) is None
    store.prune({0: 200, 1: 40})
    assert [s.offset for s in store.snapshots(0)] == [200, 300]
    assert [s.offset for s in store.snapshots(1)] == [40]
    assert store.load_global(store.snapshots(0)[0].ckpt) == {}


def test_checkpoint_files_never_unpickle():
    import pickle

    with pytest.raises(TypeError):
        pack({"x": np.array([object()], dtype=object)})
    evil = msgpack.packb(msgpack.ExtType(1, msgpack.packb(["|O", [1], pickle.dumps(object())])))
    with pytest.raises(ValueError):
        unpack(evil)
    with pytest.raises(ValueError):
        unpack(msgpack.packb(msgpack.ExtType(9, b"")))


def test_a_checkpoint_of_another_feature_configuration_is_refused():
    from state.features import FeatureSpec

    raws = _records(600)
    p = Pipeline.from_settings(SETTINGS, now=lambda: 2e9)
    _run(p, raws, 0, 600)
    state = p.global_state()
    block = p.store.export_rows(p.store.live_rows())
    other = Pipeline.from_settings(SETTINGS.replace(half_life_s=123.0), now=lambda: 2e9)
    with pytest.raises(ValueError, match="another feature configuration"):
        other.load_global_state(unpack(pack(state)))
    from state.user_store import UserStore

    narrow = UserStore(FeatureSpec(category_buckets=8), capacity=100)
    with pytest.raises(ValueError, match="another feature configuration"):
        narrow.import_rows(unpack(pack(block)))
