"""The changelog's restore rules, in-process: the last marker ends the state, the last record per key
before it wins, records of a checkpoint a crash cut short are ignored (and stay ignored once a later
marker names them void), an evicted user's tail and an erasure's tombstone come back as such."""

from __future__ import annotations

import numpy as np

from state.features import FeatureSpec
from state.user_store import UserStore
from stream.kafka.records import Records
from stream.runtime.changelog import FULL, MARKER_KEY, TAIL, TAIL_DTYPE, decode_partition, row_dtype
from stream.runtime.checkpoints import pack

from helpers import ChangelogSink as _Sent

DTYPE = row_dtype(UserStore(FeatureSpec(), capacity=1))


def _full(seq: int, segment: int) -> bytes:
    row = np.zeros(1, dtype=DTYPE)
    row["seq"], row["segment"], row["t0"] = seq, segment, 1.7e9
    return FULL + row.tobytes()


def _tail(seq: int, segment: int) -> bytes:
    return TAIL + np.array([(seq, segment, b"\x01" * 16)], dtype=TAIL_DTYPE).tobytes()


def _marker(offset: int, void=()) -> bytes:
    return pack({"v": 1, "offset": offset, "ck": offset, "void": [list(v) for v in void], "stale": []})


def _decode(records: list[tuple[bytes, bytes | None]]):
    keys = [k for k, _ in records]
    return decode_partition(3, Records.single("cl", 3, np.arange(len(records)), np.zeros(len(records)), keys,
                                              [v for _, v in records]), len(records), DTYPE)


def test_the_last_marker_ends_the_state_and_the_last_record_per_key_wins():
    st = _decode([(b"a", _full(1, 0)), (b"b", _full(1, 2)), (MARKER_KEY, _marker(100)),
                  (b"a", _full(2, 1)), (b"c", _tail(4, 5)), (b"b", None), (MARKER_KEY, _marker(200)),
                  (b"a", _full(9, 9))])  # after the last marker: a checkpoint cut short
    assert st.offset == 200 and st.marker_at == 6
    assert st.users["ids"] == [b"a"] and st.users["seq"].tolist() == [2] and st.users["segment"].tolist() == [1]
    assert st.tails == {"c": (4, 5, b"\x01" * 16, 3)}  # b was erased: gone


def test_a_cut_short_checkpoint_stays_ignored_behind_a_later_marker_that_names_it_void():
    st = _decode([(b"a", _full(1, 0)), (MARKER_KEY, _marker(100)),
                  (b"a", _full(5, 3)),  # offset 2: written, never sealed (the writer was killed)
                  (b"b", _full(1, 1)), (MARKER_KEY, _marker(150, void=[(2, 3)]))])
    assert st.offset == 150
    assert dict(zip(st.users["ids"], st.users["seq"].tolist())) == {b"a": 1, b"b": 1}


def test_no_marker_means_no_checkpoint():
    st = _decode([(b"a", _full(1, 0))])
    assert st.offset is None and st.users is None


def test_evicted_users_continue_seq_and_previous_segment_when_they_come_back():
    import random

    import msgpack

    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    p = Pipeline.from_settings(Settings(segments=3, warmup_users=20, model_update_events=200, max_users=30, seed=1,
                                        half_life_s=300.0),
                               now=lambda: 2e9)
    rng = random.Random(3)
    last: dict[str, tuple[int, int]] = {}
    evicted = 0
    for b in range(60):
        # a user's behaviour moves to another group every 15 batches: segments change over time
        evs = [{"user_id": f"u{(u := rng.randrange(90))}", "action": ["view", "click", "purchase"][(u + b // 15) % 3],
                "ts": 1.7e9 + b * 100 + i, "item_id": rng.randrange(20), "categories": [f"c{(u + b // 15) % 3}"]}
               for i in range(20)]
        r = p.process_records([msgpack.packb(e) for e in evs])
        evicted += r.evicted
        for uid, seg, prev, seq in zip(r.changes.user_ids, r.changes.segments.tolist(), r.changes.previous.tolist(),
                                       r.changes.seq.tolist()):
            before = last.get(uid, (0, -1))
            assert (seq, prev) == (before[0] + 1, before[1]), (uid, seq, prev, before)
            last[uid] = (seq, seg)
    assert evicted > 90 and len(p.store) <= 30 and p.tails.evicted  # users came and went, tails kept
    assert max(s for s, _ in last.values()) > 1


def _events(n: int, batch: int, users: int = 400) -> list[bytes]:
    import msgpack

    rng = np.random.default_rng(batch)
    return [msgpack.packb({"user_id": f"u{int(u)}", "action": "view", "ts": 1.7e9 + batch * 100 + i,
                           "item_id": int(rng.integers(50)), "categories": [f"c{int(u) % 4}"]})
            for i, u in enumerate(rng.integers(0, users, n))]


def test_a_checkpoint_of_a_partition_with_nothing_changed_writes_the_model_and_then_the_marker():
    from stream.runtime.changelog import MODEL_KEY, Changelog
    from stream.runtime.model_record import CHUNK_PREFIX
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    sent = _Sent()
    cl = Changelog("cl", sent, Pipeline.from_settings(Settings(), now=lambda: 2e9))  # type: ignore[arg-type]
    cl.write({0: 10, 1: 0})
    kinds = [(p, MODEL_KEY if k.startswith(CHUNK_PREFIX) else k) for p, k in sent.records]
    # the first checkpoint of a partition: every chunk of the model's large arrays, then its core
    assert kinds == [(0, MODEL_KEY)] * (kinds.count((0, MODEL_KEY))) + [(1, MODEL_KEY)] * kinds.count((1, MODEL_KEY)) \
        + [(0, MARKER_KEY), (1, MARKER_KEY)]
    assert kinds.count((0, MODEL_KEY)) > 1 and sent.records[kinds.count((0, MODEL_KEY)) - 1] == (0, MODEL_KEY)
    sent.records.clear()
    cl.write({0: 10, 1: 0})  # nothing changed: the core only
    assert sent.records == [(0, MODEL_KEY), (1, MODEL_KEY), (0, MARKER_KEY), (1, MARKER_KEY)]


def test_the_model_is_written_incrementally_and_restores_whole_from_an_uncompacted_log():
    """Checkpoints after small batches write only the ring chunks that changed; the restore (last record per
    key before the last marker, a cut-short checkpoint's chunks ignored) gives back the writer's exact model."""
    from stream.runtime.changelog import Changelog, decode_partition
    from stream.runtime.checkpoints import pack
    from stream.runtime.model_record import CHUNK_PREFIX
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    settings = Settings(segments=3, warmup_users=20, model_update_events=200, seed=1)
    writer = Pipeline.from_settings(settings, now=lambda: 2e9)
    sent = _Sent()
    cl = Changelog("cl", sent, writer)  # type: ignore[arg-type]
    first = len(sent.records)
    chunk_writes = []
    for b in range(12):
        r = writer.process_records(_events(60, b))
        cl.mark(r.touched)
        n = len(sent.records)
        cl.write({0: b + 1})
        chunk_writes.append(sum(k.startswith(CHUNK_PREFIX) for _, k in sent.records[n:]))
    assert first == 0 and chunk_writes[0] > 2 * max(chunk_writes[2:])  # later checkpoints: a few chunks each
    expected = pack(writer.model_state())
    # a checkpoint cut short after its records: another ring, never sealed
    writer.process_records(_events(60, 99))
    cl.mark(np.arange(len(writer.store)))
    cl.stage({0: 99})
    st = decode_partition(0, sent.log(0), len(sent.records), cl.dtype)
    assert st.offset == 12 and pack(st.model) == expected
    reader = Pipeline.from_settings(settings, now=lambda: 2e9)
    Changelog("cl", _Sent(), reader).restore([st])  # type: ignore[arg-type]
    assert pack(reader.model_state()) == expected


def test_state_kept_outside_the_pipeline_rides_in_the_model_record_and_comes_back():
    """The drift monitor's PSI reference (an ``extras`` entry) survives a restore from the changelog alone."""
    from stream.observability.drift import DriftMonitor
    from stream.runtime.changelog import Changelog, PartitionState, decode_partition
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    rng = np.random.default_rng(0)
    before = DriftMonitor(reference_size=200)
    for _ in range(30):
        before.observe(distances=rng.random(40), changed=2, updated=40, embeddings=rng.normal(size=(40, 4)))
    assert before.state()["shares"] is not None  # the reference is set

    sent = _Sent()
    writer = Changelog("cl", sent, Pipeline.from_settings(Settings(), now=lambda: 2e9),  # type: ignore[arg-type]
                       extras={"drift": (before.state, before.load_state)})
    writer.write({0: 10})
    model = decode_partition(0, sent.log(0), len(sent.records), writer.dtype).model
    after = DriftMonitor(reference_size=200)
    reader = Changelog("cl", _Sent(), Pipeline.from_settings(Settings(), now=lambda: 2e9),  # type: ignore[arg-type]
                       extras={"drift": (after.state, after.load_state)})
    reader.restore([PartitionState(partition=0, offset=10, ck=1, model=model)])
    assert after.batches == before.batches
    np.testing.assert_array_equal(after.state()["shares"], before.state()["shares"])


def test_an_erasure_drops_the_users_held_records_before_its_tombstone_from_the_outbox():
    """Records held for the next marker were never published: an erasure in the same interval leaves only the
    tombstone (and what the user did after it), so the marker keeps nothing of the erased user's segments."""
    from stream.runtime.changelog import Changelog
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    cl = Changelog("cl", _Sent(), Pipeline.from_settings(Settings(), now=lambda: 2e9))  # type: ignore[arg-type]
    cl.hold([b"a", b"b", b"a"], [b"a1", b"b1", b"a2"], np.array([0, 0, 0]))
    cl.hold([b"c"], [b"c1"], np.array([1]))
    cl.hold([b"a", b"a", b"b"], [None, b"a-back", b"b2"], np.array([0, 0, 0]))  # a erased, then back
    cl.hold([b"c"], [None], np.array([1]))
    cl.seal({0: 5, 1: 5})
    keys, values = cl.release()
    assert list(zip(keys, values)) == [(b"b", b"b1"), (b"a", None), (b"a", b"a-back"), (b"b", b"b2"), (b"c", None)]


def _compacted(log: Records) -> Records:
    """What log compaction leaves of a changelog partition: the last record of each key, at its offset."""
    last = {k: i for i, k in enumerate(log.keys)}
    idx = sorted(last.values())
    return Records.single("cl", 0, log.offsets[idx], log.timestamps[idx], [log.keys[i] for i in idx],
                          [log.values[i] for i in idx])


def test_users_of_a_cut_short_checkpoint_survive_compaction_once_the_next_owner_has_checkpointed():
    """A crash after a checkpoint's rows were sent, before its marker: every restore ignores those rows, but
    compaction keeps only the last record per key and would drop the users' valid rows for them. The next
    owner's first checkpoint writes each such user again (row, or tombstone for a user the marker never
    covered), so the compacted changelog restores what the last marker named."""
    import msgpack

    from stream.runtime.changelog import Changelog
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    settings = Settings(segments=3, warmup_users=20, model_update_events=200, seed=1)
    sink = _Sent()
    writer = Pipeline.from_settings(settings, now=lambda: 2e9)
    cl = Changelog("cl", sink, writer)  # type: ignore[arg-type]
    for b in range(3):
        cl.mark(writer.process_records(_events(120, b, users=40), np.zeros(120, np.int32)).touched)
        cl.write({0: b + 1})
    named = decode_partition(0, sink.log(0), len(sink.records), cl.dtype)
    expected = dict(zip(named.users["ids"], named.users["seq"].tolist()))
    assert len(expected) == 40
    # the next interval touches old users and new ones; its rows are sent, its marker never is
    late = [msgpack.packb({"user_id": f"new{i}", "action": "view", "ts": 1.7e9 + 900 + i, "item_id": i})
            for i in range(5)]
    cl.mark(writer.process_records(_events(60, 7, users=40) + late, np.zeros(65, np.int32)).touched)
    cl.stage({0: 4})
    cut = decode_partition(0, sink.log(0), len(sink.records), cl.dtype)
    assert cut.offset == 3 and {b"u0", b"new0"} <= set(cut.redo)

    owner = Pipeline.from_settings(settings, now=lambda: 2e9)
    ocl = Changelog("cl", sink, owner)  # type: ignore[arg-type]  # the same partition, appended to
    ocl.restore([cut])
    ocl.write({0: cut.offset})  # its first checkpoint, before any input
    after = decode_partition(0, _compacted(sink.log(0)), len(sink.records), cl.dtype)
    assert after.offset == 3
    assert dict(zip(after.users["ids"], after.users["seq"].tolist())) == expected
    latest = {k: v for k, v in zip(sink.log(0).keys, sink.log(0).values)}
    assert all(latest[f"new{i}".encode()] is None for i in range(5))  # nothing of them left but a tombstone
