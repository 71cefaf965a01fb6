"""Malformed input never crashes the consumer; every bad record is dead-lettered with a reason,
every good event is applied."""

from __future__ import annotations

import numpy as np
import pytest

from fuzzing import mixed_log
from helpers import SegstreamProcess, produce, read_topic
from state.features import FeatureSpec
from state.events import REASONS, EventDecoder

N_BAD = 10_000
N_GOOD = 5_000


def test_decoder_rejects_exactly_the_bad_records():
    raws, bad = mixed_log(40_000, 20_000, seed=1)
    dec = EventDecoder(FeatureSpec(), now=lambda: 1.8e9)
    for i in range(0, len(raws), 5000):  # micro-batches, as the consumer decodes them
        chunk = raws[i : i + 5000]
        batch, rejected = dec.decode_records(chunk)
        want_bad = sorted(j - i for j in bad if i <= j < i + 5000)
        assert [r.index for r in rejected] == want_bad
        assert all(r.reason in REASONS and r.detail for r in rejected)
        assert batch.source_index.tolist() == sorted(set(range(len(chunk))) - set(want_bad))
        assert np.isfinite(batch.ts).all()


@pytest.mark.integration
def test_consumer_survives_ten_thousand_malformed_records(broker, topics, kafka_client):
    broker.create(topics)
    raws, bad = mixed_log(N_BAD, N_GOOD)
    keys = [b"k%d" % (i % 7) for i in range(len(raws))]
    produce(broker.bootstrap, topics["input"], raws, keys=keys)
    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "20", "--batch-max-events", "1000")
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= len(raws), timeout_s=150)
        m = proc.metrics()
        code, summary, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]  # zero crashes: it ran to the end and stopped cleanly on SIGTERM
    assert m["segstream_events_applied_total"] == N_GOOD
    assert m["segstream_dead_letters_total"] == N_BAD
    assert sum(m[f'segstream_events_invalid_total{{reason="{r}"}}'] for r in REASONS) == N_BAD
    assert m["segstream_users_tracked"] == 100

    dlq = read_topic(broker.bootstrap, topics["dlq"], expected=N_BAD, timeout_s=120)
    headers = [dict(r.headers) for r in dlq]
    assert sorted(int(h["segstream.source.offset"]) for h in headers) == sorted(bad)
    assert all(h["segstream.dlq.reason"].decode() in REASONS for h in headers)
    by_offset = {int(h["segstream.source.offset"]): r for h, r in zip(headers, dlq)}
    assert all(by_offset[i].value == raws[i] for i in bad)  # original bytes, untouched
