"""The Kafka-free core: warm-up then assignment, deletion, deterministic replay."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from eventlogs.recorded import read_event_chunks, write_events
from eventlogs.synthetic import SyntheticConfig, generate
from state.quality import adjusted_rand_index
from stream.runtime.pipeline import Pipeline
from stream.runtime.replay import replay_log
from stream.settings import Settings

CFG = SyntheticConfig(users=400, groups=4, events=12_000, seed=5)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("logs") / "planted.msgpack"
    write_events(path, generate(CFG))
    return path


def test_every_user_gets_a_segment_and_groups_are_found(log):
    settings = Settings(segments=4, warmup_users=100, batch_max_events=500, model_update_events=1000)
    p = Pipeline.from_settings(settings)
    first = set()
    for chunk in read_event_chunks(log, 500):
        r = p.process_objects(chunk)
        first |= {u for u, prev in zip(r.changes.user_ids, r.changes.previous.tolist()) if prev < 0}
    assert len(first) == CFG.users
    assert sum(p.users_per_segment().values()) == CFG.users
    truth = CFG.group_of_users()
    rows = p.store.live_rows()
    users = [int(u[1:]) for u in p.store.user_ids(rows)]
    assert adjusted_rand_index(truth[users], p.store.segment[rows]) > 0.5


def test_replay_is_byte_identical(log, tmp_path):
    settings = Settings(segments=4, warmup_users=100, batch_max_events=700, model_update_events=1500, seed=11)
    a, b = tmp_path / "a.msgpack", tmp_path / "b.msgpack"
    sa = replay_log(settings, log, a, clock="event")
    sb = replay_log(settings, log, b, clock="event")
    assert sb.changes == sa.changes > CFG.users
    assert a.read_bytes() == b.read_bytes()
    other = tmp_path / "c.msgpack"
    replay_log(settings.replace(seed=12), log, other, clock="event")
    assert other.read_bytes() != a.read_bytes()  # the seed matters, so the equality above is not vacuous


def test_delete_erases_and_next_event_starts_fresh():
    p = Pipeline.from_settings(Settings(segments=2, warmup_users=4, hysteresis=0.0))
    evs = [{"user_id": f"u{i}", "action": "view" if i % 2 else "purchase", "ts": 1.7e9 + i, "item_id": i}
           for i in range(8)]
    p.process_objects(evs)
    assert p.segment_of("u1") is not None
    before = sum(p.users_per_segment().values())
    r = p.process_objects([{"user_id": "u1", "action": "view", "ts": 1.7e9 + 20},
                           {"user_id": "u1", "action": "delete", "ts": 1.7e9 + 21}])
    assert r.erased == ["u1"]
    assert p.store.row_of("u1") is None and p.segment_of("u1") is None
    assert sum(p.users_per_segment().values()) == before - 1
    r = p.process_objects([{"user_id": "u1", "action": "click", "ts": 1.7e9 + 30}])
    assert r.changes.user_ids == ["u1"] and r.changes.previous.tolist() == [-1] and r.changes.seq.tolist() == [1]


def test_invalid_records_are_returned_not_raised():
    p = Pipeline.from_settings(Settings(segments=2, warmup_users=2))
    r = p.process_records([msgpack.packb({"user_id": "a", "action": "view", "ts": 1.7e9}), b"\xc1",
                           msgpack.packb({"user_id": "b", "action": "view", "ts": 1.7e9})])
    assert r.events == 2 and [x.index for x in r.rejected] == [1]
    assert len(r.changes) == 2 and np.all(r.changes.source_index == [0, 2])


def test_changes_the_model_causes_carry_the_batch_event_time_not_the_users_last_activity(log):
    """Re-assignments (the user's segment ended or split; a restored user without one) are not caused by an
    event of that user: they carry the event time at which they are made, so that a recommender (and the
    latency bench) does not read the user's last activity, possibly hours old, as the cause."""
    import math

    p = Pipeline.from_settings(Settings(segments=4, warmup_users=100, batch_max_events=500), now=lambda: math.inf)
    for chunk in read_event_chunks(log, 500):
        p.process_objects(chunk)
    queued = p.store.live_rows()[:30]
    waiting_since = p.store.last_ts[queued].copy()
    p.store.segment[queued] = -1  # as a restore leaves users whose instance had no model yet
    p.recount()
    assert p.requeue_unassigned() == 30
    queued_users = set(p.store.user_ids(queued))
    t = float(p.store.last_ts.max()) + 3600.0
    others = [u for u in p.store.user_ids(p.store.live_rows()) if u not in queued_users][:20]
    r = p.process_objects([{"user_id": u, "action": "purchase", "ts": t + i, "value": 5.0} for i, u in enumerate(others)])
    model_caused = [i for i, u in enumerate(r.changes.user_ids) if u in queued_users]
    assert len(model_caused) == 30
    assert (r.changes.source_index[model_caused] == -1).all()
    assert r.max_event_time == t + 19 and (r.changes.event_time[model_caused] == r.max_event_time).all()
    assert (waiting_since < t).all()
    for i, u in enumerate(r.changes.user_ids):  # the others' changes name their own event
        if u not in queued_users:
            assert r.changes.event_time[i] == t + others.index(u)
