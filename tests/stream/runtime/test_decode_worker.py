"""The decode process (stream/runtime/decode_worker.py) gives exactly in-process decoding, and losing it loses nothing."""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest

from fuzzing import mixed_log
from helpers import produce, read_topic
from state.features import FeatureSpec
from stream.runtime.decode_worker import DecodeAhead, DecodeWorker, DecodeWorkerError
from state.events import EventDecoder


def _same(a, b) -> None:
    (ba, ra), (bb, rb) = a, b
    assert [(r.index, r.reason, r.detail, r.raw) for r in ra] == [(r.index, r.reason, r.detail, r.raw) for r in rb]
    assert ba.user_ids == bb.user_ids and ba.event_ids == bb.event_ids and ba.deletes == bb.deletes
    for name in ("actions", "ts", "item_tokens", "values", "cat_event", "cat_bucket", "source_index"):
        x, y = getattr(ba, name), getattr(bb, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=name == "values"), name


def test_worker_decodes_fuzzed_batches_exactly_like_the_consumer():
    """Malformed msgpack, nulls, oversized and contract-breaking records mixed with good ones; a fixed
    clock so that the far-future check has the same bound on both sides."""
    raws, bad = mixed_log(6_000, 6_000, seed=3)
    raws[5] = None
    raws[17] = b"\x81" + b"x" * 70_000  # oversized
    decoder = EventDecoder(FeatureSpec(), now=lambda: 1.8e9)
    worker = DecodeWorker(decoder)
    try:
        for i in range(0, len(raws), 1500):
            chunk = raws[i:i + 1500]
            worker.submit(chunk)
            _same(worker.result(), decoder.decode_records(chunk))
        assert not worker.busy
        with pytest.raises(DecodeWorkerError):
            worker.result()  # nothing submitted
        worker.submit(raws[:10])
        with pytest.raises(DecodeWorkerError):
            worker.submit(raws[:10])  # one batch at a time
    finally:
        worker.close()


def test_a_dead_worker_is_reported():
    worker = DecodeWorker(EventDecoder(FeatureSpec()))
    worker._proc.kill()
    worker._proc.wait()
    with pytest.raises(DecodeWorkerError):
        worker.submit([msgpack.packb({"user_id": "u", "action": "view", "ts": 1.7e9})] * 50_000)
        worker.result()
    worker.close()


@pytest.mark.integration
def test_consumer_keeps_every_event_when_the_decode_process_dies(broker, topics, kafka_client):
    """The child is killed after the first batch: the run goes on decoding in-process, every event is
    applied once and every user gets a segment."""
    from stream.runtime.app import run_consumer

    broker.create(topics, partitions=2)
    users = 300
    events = [msgpack.packb({"user_id": f"u{i % users}", "action": "view", "ts": 1.7e9 + i, "item_id": f"i{i % 40}",
                             "categories": [f"c{i % users % 5}"]}) for i in range(4000)]
    produce(broker.bootstrap, topics["input"], events, keys=[b"u%d" % (i % users) for i in range(4000)])
    settings = broker.settings(topics, warmup_users=50, batch_max_events=400, segments=3)
    assert settings.decode_process
    seen: dict[str, object] = {}

    def on_ready(runner) -> None:
        seen["runner"] = runner
        seen["worker"] = runner.decode_ahead.worker if runner.decode_ahead is not None else None
        seen["up"] = runner.metrics.registry.get_sample_value("segstream_decode_process_up")

    def on_batch(result, summary) -> None:
        worker = seen["worker"]
        if summary.batches == 1 and worker is not None:
            worker._proc.kill()

    summary = run_consumer(settings, stop=threading.Event(), max_events=4000, idle_exit_s=15,
                           on_ready=on_ready, on_batch=on_batch)
    assert seen["worker"] is not None, "the decode process was not started"
    assert not seen["runner"].decode_ahead.active, "the runner did not notice the dead decode process"
    assert seen["up"] == 1 and seen["runner"].metrics.registry.get_sample_value("segstream_decode_process_up") == 0
    assert summary.events == 4000 and summary.invalid == 0
    out = read_topic(broker.bootstrap, topics["output"], expected=users)
    assert {r.key for r in out} == {b"u%d" % i for i in range(users)}


def test_closing_with_a_batch_inside_ends_the_child_cleanly():
    """A graceful stop usually finds a prefetched batch in the child: its answer (larger than a pipe buffer)
    must not hit a closed pipe."""
    worker = DecodeWorker(EventDecoder(FeatureSpec()))
    worker.submit([msgpack.packb({"user_id": f"u{i}", "action": "view", "ts": 1.7e9}) for i in range(20_000)])
    worker.close()
    assert worker._proc.returncode == 0


def test_decode_ahead_hands_each_batch_back_once_and_switches_off_for_good_on_failure():
    off: list[int] = []
    ahead = DecodeAhead(DecodeWorker(EventDecoder(FeatureSpec())), on_off=lambda: off.append(1))

    def values(n: int) -> list[bytes]:
        return [msgpack.packb({"user_id": f"u{i}", "action": "view", "ts": 1.7e9}) for i in range(n)]

    assert ahead.exchange(values(3)) is None  # nothing was inside yet
    batch, rejected = ahead.exchange(values(5))
    assert len(batch) == 3 and not rejected
    ahead.discard()  # the 5 are dropped: the next exchange has nothing to hand back
    assert ahead.exchange(None) is None and ahead.active and not ahead.worker.busy
    ahead.exchange(values(2))
    ahead.worker._proc.kill()
    ahead.worker._proc.wait()
    got = ahead.exchange(values(1))  # the 2 may have been answered before the kill; the hand-over fails
    assert got is None or len(got[0]) == 2
    assert not ahead.active and off == [1]
    assert ahead.exchange(values(1)) is None and off == [1]  # stays off, reported once
    ahead.close()
