"""The outbox, in-process (no broker): a checkpoint's marker carries the partition's ``user-segments``
records and is the single commit point. A member that dies after its marker was confirmed but before
it published the outputs must not have its batch re-decided by the next owner (another model, another
change with the same ``seq``): the next owner re-publishes the marker's outbox byte for byte, then
continues. A member that dies before its marker was confirmed has published nothing of the batch."""

from __future__ import annotations

import random
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import msgpack
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream.contracts.user_segments import decode_segment_event
from stream.kafka import TopicPartition
from stream.kafka.records import Records
from stream.observability.metrics import Metrics
from stream.runtime import restore as restore_module
from stream.runtime.changelog import MARKER_KEY, Changelog, decode_partition, row_dtype
from stream.runtime.checkpoints import pack
from stream.runtime.pipeline import Pipeline
from stream.runtime.runner import StreamRunner
from stream.settings import Settings

IN, OUT, CL = "events", "user-segments", "events.changelog"


class Crash(Exception):
    """The member dies: what it had not confirmed is lost."""


class Log:
    """Topics in memory: topic -> partition -> [(key, value)]."""

    def __init__(self) -> None:
        self.topics: dict[str, dict[int, list[tuple[bytes | None, bytes | None]]]] = defaultdict(lambda: defaultdict(list))

    def records(self, topic: str, partition: int) -> Records:
        recs = self.topics[topic][partition]
        return Records.single(topic, partition, np.arange(len(recs)), np.zeros(len(recs)),
                              [k for k, _ in recs], [v for _, v in recs])


class FakePublisher:
    """Sends land in the log on :meth:`confirm`; ``crash_at``: the confirm (counted from arming) that dies
    instead, its sends lost (kept in ``lost`` to compare with)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.pending: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.crash_at: int | None = None
        self.confirms = 0
        self.lost: list[tuple[str, int, bytes | None, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.pending.append((topic, 0, key, value))

    def send_many(self, topic: str, keys: Any, values: Any) -> None:
        self.pending.extend((topic, 0, k, v) for k, v in zip(keys, values))  # one output partition

    def send_columns(self, topic: str, partition: int, key_bytes: bytes, key_lengths: np.ndarray,
                     value_bytes: bytes, value_lengths: np.ndarray) -> None:
        ka = va = 0
        for kn, vn in zip(np.asarray(key_lengths).tolist(), np.asarray(value_lengths).tolist()):
            self.pending.append((topic, partition, key_bytes[ka:ka + kn], None if vn < 0 else value_bytes[va:va + vn]))
            ka, va = ka + kn, va + max(vn, 0)

    def confirm(self) -> int:
        pending, self.pending = self.pending, []
        self.confirms += 1
        if self.crash_at is not None and self.confirms == self.crash_at:
            self.lost = pending
            raise Crash()
        for topic, p, k, v in pending:
            self.log.topics[topic][p].append((k, v))
        return len(pending)

    def arm(self, n: int) -> None:
        self.confirms, self.crash_at = 0, n


class FakeConsumer:
    def __init__(self, commits: dict[TopicPartition, int]) -> None:
        self.commits = commits  # shared: the group's committed offsets

    def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp)

    def commit(self, offsets: dict) -> None:
        self.commits.update({tp: o.offset for tp, o in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        pass

    def position(self, tp: TopicPartition) -> int:
        return 1 << 40

    def group_metadata(self) -> Any:
        return SimpleNamespace(generation_id=1, member_id="m")


SETTINGS = dict(segments=3, warmup_users=20, model_update_events=100, half_life_s=3600.0, batch_max_events=100,
                input_topic=IN, output_topic=OUT, lineage_topic="lineage",
                checkpoint_share=1.0)  # a checkpoint per batch: the crash points are counted in checkpoints


def _member(log: Log, commits: dict, seed: int, **overrides: Any) -> tuple[StreamRunner, FakePublisher]:
    settings = Settings(seed=seed, **{**SETTINGS, **overrides})
    pipeline = Pipeline.from_settings(settings, now=lambda: 2e9)
    publisher = FakePublisher(log)
    r = StreamRunner(settings, pipeline, FakeConsumer(commits), publisher, Metrics(CollectorRegistry()),  # type: ignore[arg-type]
                     clock=lambda: 2e9)
    r.changelog = Changelog(CL, publisher, pipeline)  # type: ignore[arg-type]
    return r, publisher


def _batch(partition: int, start: int, n: int, seed: int, users: int = 40, flip: int = 0) -> Records:
    rng = random.Random(seed)
    evs = [{"user_id": f"p{partition}u{(u := rng.randrange(users))}",
            "action": ["view", "click", "purchase"][(u + flip) % 3], "ts": 1.7e9 + start + i,
            "item_id": rng.randrange(20), "categories": [f"c{(u + flip) % 3}"]} for i in range(n)]
    return Records.single(IN, partition, np.arange(start, start + n), np.zeros(n),
                          [e["user_id"].encode() for e in evs], [msgpack.packb(e) for e in evs])


def _assign(r: StreamRunner, partition: int) -> None:
    r.rebalance.on_partitions_assigned([TopicPartition(IN, partition)])
    r._apply_rebalance()


def _step(r: StreamRunner, batch: Records) -> None:
    r._process(batch)  # checkpoint_interval_ms 0: a checkpoint per batch


def _history(log: Log) -> tuple[dict[str, list[dict]], list[str]]:
    """Per user, the published changes with exact re-sends folded; and the contract's breaches."""
    seen: dict[str, bytes] = {}
    hist: dict[str, list[dict]] = defaultdict(list)
    for key, value in log.topics[OUT][0]:
        ev = decode_segment_event(value)
        if ev["change_id"] in seen:
            assert seen[ev["change_id"]] == value  # a change id repeats only as an exact re-send
            continue
        seen[ev["change_id"]] = value
        hist[key.decode()].append(ev)
    bad = []
    for uid, evs in hist.items():
        for before, ev in zip([None] + evs[:-1], evs):
            if ev["seq"] != (before["seq"] if before else 0) + 1:
                bad.append(f"{uid}: seq {ev['seq']} after {before['seq'] if before else 0}")
            elif before and ev["previous_segment"] != before["segment"]:
                bad.append(f"{uid}: previous_segment {ev['previous_segment']}, last {before['segment']}")
    return hist, bad


@pytest.mark.parametrize("crash_at, commit_interval_ms", [(1, 0), (2, 0), (3, 0), (1, 60_000)],
                         ids=["before-marker-records", "marker-lost", "after-marker", "outbox-unconfirmed"])
def test_a_member_dying_in_a_checkpoint_leaves_one_version_of_each_change(monkeypatch, crash_at, commit_interval_ms):
    """Confirm k of the checkpoint dies: 1 the changelog records, 2 the markers (with the outbox), 3 the
    outbox's publication (confirmed before the offsets are committed: a commit per checkpoint). With
    commits spaced (``outbox-unconfirmed``) a checkpoint does not wait for its outbox, so the first confirm
    of the next one carries it: dying there loses the last batch's outbox, which the restore re-sends.
    The second member holds its own model (partition 1) when partition 0 moves to it."""
    log = Log()
    commits: dict[TopicPartition, int] = {}
    monkeypatch.setattr(restore_module, "read_partitions", lambda settings, topic, parts: (
        {p: log.records(topic, p) for p in parts}, {p: len(log.topics[topic][p]) for p in parts}))

    first, pub1 = _member(log, commits, seed=1, commit_interval_ms=commit_interval_ms)
    _assign(first, 0)
    for b in range(4):
        _step(first, _batch(0, 100 * b, 100, seed=b))
    crashed = _batch(0, 400, 100, seed=99, flip=1)  # behaviour moves: segment changes in this batch
    if commit_interval_ms:  # that batch checkpoints, and the next one dies before its outbox is confirmed
        _step(first, crashed)
        assert any(topic == OUT for topic, *_ in pub1.pending)
        crashed = _batch(0, 500, 100, seed=98, flip=1)
    pub1.arm(crash_at)
    with pytest.raises(Crash):
        _step(first, crashed)
    marker_confirmed = crash_at == 3
    lost = [(k, v) for topic, _, k, v in pub1.lost if topic == OUT]
    if marker_confirmed or commit_interval_ms:
        assert lost  # a marker's outbox (this batch's, or the last one's), never confirmed by the first member
    assert first.pipeline.model is not None

    second, pub2 = _member(log, commits, seed=7)
    _assign(second, 1)
    for b in range(4):
        _step(second, _batch(1, 100 * b, 100, seed=50 + b, flip=2))
    assert second.pipeline.model is not None  # its own model, not the first member's
    published = len(log.topics[OUT][0])
    _assign(second, 0)
    resent = log.topics[OUT][0][published:]
    # the last marker's outbox, the very bytes the first member sent: same change ids, same seq; nothing of
    # a batch whose marker was never confirmed
    assert resent == lost
    if not marker_confirmed:  # the input resumes at the last marker's offset: before the batch, or past it
        _step(second, crashed)
    _step(second, _batch(0, crashed.offset + 100, 100, seed=123, flip=2))
    second._maybe_checkpoint(force=True)  # as the run loop does on its way out: all it sent is confirmed
    hist, bad = _history(log)
    assert bad == []
    # what the new owner holds is what was published: each user's next change will be seq + 1
    store = second.pipeline.store
    held = {u: (int(store.seq[store.row_of(u)]), int(store.segment[store.row_of(u)])) for u in hist
            if u.startswith("p0") and store.row_of(u) is not None}
    assert held == {u: (hist[u][-1]["seq"], hist[u][-1]["segment"]) for u in held}
    seqs = {u: [e["seq"] for e in evs] for u, evs in hist.items() if u.startswith("p0")}
    assert max(len(s) for s in seqs.values()) >= 2
    if marker_confirmed:  # users of the re-sent changes went on with seq + 1
        moved = {k.decode(): decode_segment_event(v)["seq"] for k, v in lost if v is not None}
        assert any(seqs[u][-1] > s for u, s in moved.items()), (moved, seqs)


def test_the_restore_hands_back_the_last_markers_outbox_and_never_an_unmarkered_batchs():
    dtype = row_dtype(Pipeline.from_settings(Settings(), now=lambda: 2e9).store)

    def marker(offset: int, out: list[tuple[bytes, bytes | None]]) -> bytes:
        doc: dict[str, Any] = {"v": 1, "offset": offset, "ck": offset, "void": [], "stale": []}
        if out:
            doc["out"] = {"k": b"".join(k for k, _ in out), "kl": np.array([len(k) for k, _ in out]),
                          "v": b"".join(v or b"" for _, v in out),
                          "vl": np.array([-1 if v is None else len(v) for _, v in out])}
        return pack(doc)

    def decode(recs: list[tuple[bytes, bytes | None]]):
        return decode_partition(0, Records.single(CL, 0, np.arange(len(recs)), np.zeros(len(recs)),
                                                  [k for k, _ in recs], [v for _, v in recs]), len(recs), dtype)

    older, newer = [(b"a", b"A1")], [(b"b", b"B1"), (b"c", None), (b"a", b"A2")]
    st = decode([(MARKER_KEY, marker(10, older)), (MARKER_KEY, marker(20, newer))])
    assert st.offset == 20 and st.outbox == ([b"b", b"c", b"a"], [b"B1", None, b"A2"])  # the last marker's only
    st = decode([(MARKER_KEY, marker(10, older)), (MARKER_KEY, marker(20, []))])
    assert st.outbox == ([], [])  # its outbox was published before the next marker was written

    # a checkpoint's outputs are only released once its marker is sealed; a partition that leaves first
    # takes its held outputs with it (never published: the next owner makes the batch's only version)
    sent: list[tuple[str, int]] = []
    pub = SimpleNamespace(send_columns=lambda topic, p, *a: sent.append((topic, p)), confirm=lambda: 0)
    cl = Changelog(CL, pub, Pipeline.from_settings(Settings(), now=lambda: 2e9))  # type: ignore[arg-type]
    cl.hold([b"x", b"y", b"z"], [b"X", None, b"Z"], np.array([0, 1, 0]))
    assert cl.holds(0) and cl.holds(1) and cl.release() == ([], [])
    cl.forget_partition(1)
    assert not cl.holds(1)
    cl.write({0: 5})
    assert cl.release() == ([b"x", b"z"], [b"X", b"Z"]) and not cl.holds()
    assert cl.release() == ([], [])
