"""The local directory as a cache of the changelog: a restore from a snapshot plus the changelog after the
marker it covers equals a restore from the whole changelog; a snapshot whose marker is not there is not used."""

from __future__ import annotations

import msgpack
import numpy as np

from stream.kafka.records import Records
from stream.runtime.changelog import MARKER_KEY, Changelog, decode_partition
from stream.runtime.changelog_cache import base_records, cache_extra, covers, marker_ck, model_of
from stream.runtime.checkpoints import pack, unpack
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings

from helpers import ChangelogSink as _Sent

SETTINGS = Settings(segments=3, warmup_users=20, model_update_events=200, seed=1, max_users=60)


def _batch(b: int) -> list[bytes]:
    rng = np.random.default_rng(b)
    evs = [{"user_id": f"u{int(u)}", "action": ["view", "click"][int(u) % 2], "ts": 1.7e9 + b * 50 + i,
            "item_id": int(rng.integers(30)), "categories": [f"c{int(u) % 3}"]} for i, u in enumerate(rng.integers(0, 150, 40))]
    if b == 9:
        evs.append({"user_id": "u3", "action": "delete", "ts": 1.7e9 + b * 50 + 41})
    return [msgpack.packb(e) for e in evs]


def _checkpoint(p: Pipeline, cl: Changelog, b: int) -> None:
    raw = _batch(b)
    r = p.process_records(raw, np.zeros(len(raw), dtype=np.int32))
    cl.mark(r.touched)
    if r.erased:
        cl.erased(r.erased, [0] * len(r.erased))
    cl.write({0: b + 1})


def _state(st) -> tuple:
    u = st.users
    rows = {uid: tuple(np.asarray(u[name][i]).tobytes() for name in u if name != "ids") for i, uid in enumerate(u["ids"])}
    return st.offset, st.ck, st.void, st.stale, st.tails, rows, pack(st.model), st.outbox


def _written(checkpoints: int) -> tuple[Pipeline, _Sent, Changelog, int]:
    """A pipeline with its changelog after ``checkpoints`` checkpoints, and the offset of partition 0's last marker."""
    writer = Pipeline.from_settings(SETTINGS, now=lambda: 2e9)
    sent = _Sent()
    cl = Changelog("cl", sent, writer)  # type: ignore[arg-type]
    for b in range(checkpoints):
        _checkpoint(writer, cl, b)
    at = max(i for i, (p, k) in enumerate(sent.records) if p == 0 and k == MARKER_KEY)
    return writer, sent, cl, at


def test_a_restore_from_the_cache_and_the_changelog_after_it_equals_one_from_the_whole_changelog():
    writer, sent, cl, at = _written(6)
    # the snapshot of that checkpoint, as the runner writes it (through the file format)
    rows = writer.store.rows_of_partition(0)
    doc = unpack(pack({**cache_extra(cl, 0, rows, at), "users": writer.store.export_rows(rows)}))
    shared = unpack(pack(writer.global_state()))
    assert covers(doc, "cl") == at and covers(doc, "another-topic") is None
    assert writer.tails.evicted  # evicted users' tails are in the snapshot too
    for b in range(6, 12):  # more checkpoints (an erasure among them), then one cut short
        _checkpoint(writer, cl, b)
    writer.process_records(_batch(99), np.zeros(40, dtype=np.int32))
    cl.mark(np.arange(len(writer.store)))
    cl.stage({0: 99})

    end = sum(1 for p, _ in sent.records if p == 0)
    whole = decode_partition(0, sent.log(0), end, cl.dtype)
    tail = sent.log(0, start=at)
    assert marker_ck(tail, at) == doc["changelog"]["ck"]
    cached = decode_partition(0, Records.concat([base_records(cl, doc, model_of(shared), 0), tail]), end, cl.dtype)
    assert whole.offset == 12 and b"u3" not in whole.users["ids"]
    assert _state(cached) == _state(whole)

    # and loaded into fresh pipelines: the same users, tails and model
    a, b = (Pipeline.from_settings(SETTINGS, now=lambda: 2e9) for _ in range(2))
    Changelog("cl", _Sent(), a).restore([whole])  # type: ignore[arg-type]
    Changelog("cl", _Sent(), b).restore([cached])  # type: ignore[arg-type]
    assert pack(a.model_state()) == pack(b.model_state()) and a.tails.evicted == b.tails.evicted
    ea, eb = ({uid: pack([e[name][i] for name in e if name not in ("ids", "rows", "t0")]) for i, uid in enumerate(e["ids"])}
              for e in (p.store.export_rows(p.store.live_rows()) for p in (a, b)))
    assert ea == eb and len(ea) > 20 and a.store.t0 == b.store.t0


def test_a_snapshot_whose_marker_is_not_at_its_offset_is_not_used():
    writer, sent, cl, at = _written(3)
    assert marker_ck(sent.log(0, start=at), at) == cl._ck
    assert marker_ck(sent.log(0, start=at - 1), at - 1) is None  # another record there
    assert marker_ck(sent.log(0, start=at + 1), at + 1) is None  # nothing there (a shorter, recreated topic)
