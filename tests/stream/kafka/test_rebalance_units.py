"""What the run loop does with each rebalance event (a plain fake consumer at the Kafka boundary)."""

from __future__ import annotations

from types import SimpleNamespace

import msgpack
import numpy as np
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from stream.runtime.checkpoints import CheckpointStore
from stream.observability.metrics import Metrics
from stream.runtime.pipeline import Pipeline
from stream.runtime.runner import StreamRunner
from stream.settings import Settings

T = "events"


class FakeConsumer:
    """Committed offsets in a dict; records seeks; refuses to commit (nothing may be committed here)."""

    def __init__(self, committed: dict[int, int | None]) -> None:
        self._committed = committed
        self.seeks: dict[int, int | str] = {}

    def committed(self, tp: TopicPartition) -> int | None:
        return self._committed.get(tp.partition)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp.partition] = offset

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.seeks[tp.partition] = "beginning"

    def group_metadata(self):
        return SimpleNamespace(generation_id=7, member_id="m")

    def commit(self, offsets):  # pragma: no cover - failing is the point
        raise AssertionError("a rebalance must not commit")


def _users_by_partition(p: Pipeline) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for part in range(5):
        rows = p.store.rows_of_partition(part)
        if len(rows):
            out[part] = set(p.store.user_ids(rows))
    return out


def test_revoked_lost_and_assigned_partitions(tmp_path):
    settings = Settings(segments=2, warmup_users=4, input_topic=T, group_id="g")
    pipeline = Pipeline.from_settings(settings, now=lambda: 2e9)
    evs = [{"user_id": f"p{i % 4}-u{i}", "action": "view", "ts": 1.7e9 + i} for i in range(40)]
    pipeline.process_records([msgpack.packb(e) for e in evs], np.array([i % 4 for i in range(40)], np.int32))
    assert set(_users_by_partition(pipeline)) == {0, 1, 2, 3}

    # a snapshot of partition 1 at offset 15, and a newer one at 30 that was never committed
    store = CheckpointStore(tmp_path, "g", T)
    saved = pipeline.store.export_rows(pipeline.store.rows_of_partition(1))
    store.write(pipeline.global_state(), {1: (15, saved)})
    store.write(pipeline.global_state(), {1: (30, pipeline.store.export_rows(np.zeros(0, np.int64)))})

    consumer = FakeConsumer({0: 10, 1: 15, 2: 20, 3: 5, 4: None})
    runner = StreamRunner(settings, pipeline, consumer, None, Metrics(CollectorRegistry()),  # type: ignore[arg-type]
                          checkpoints=store)
    tps = {p: TopicPartition(T, p) for p in range(5)}
    runner._state_offsets = {tps[0]: 10, tps[1]: 18, tps[2]: 20, tps[3]: 5}
    runner._positions = {tps[0]: 10, tps[1]: 15, tps[2]: 20, tps[3]: 5}  # partition 1 processed past its commit
    before = _users_by_partition(pipeline)
    rb = runner.rebalance
    rb.on_partitions_assigned([tps[0], tps[1], tps[2], tps[3]])
    rb.drain()
    rb.on_partitions_revoked([tps[0], tps[1], tps[2]])
    rb.on_partitions_lost([tps[3]])
    rb.on_partitions_assigned([tps[0], tps[1], tps[4]])

    reset = runner._apply_rebalance()

    after = _users_by_partition(pipeline)
    assert after[0] == before[0] and consumer.seeks[0] == 10  # handed straight back, fully committed: kept
    assert after[1] == before[1] and consumer.seeks[1] == 15  # not in sync: dropped, restored from the snapshot
    assert runner._restoring == {}  # the snapshot sits exactly at the commit
    assert 2 not in after and 3 not in after  # revoked, lost: state dropped (and nothing committed)
    assert consumer.seeks[4] == "beginning"  # new partition, nothing committed: from the start
    assert reset == set(tps.values())  # records fetched for these in that poll are void (kept ones come again)
    counts = pipeline.users_per_segment()
    assert sum(counts.values()) == sum(1 for r in pipeline.store.live_rows() if pipeline.store.segment[r] >= 0)
