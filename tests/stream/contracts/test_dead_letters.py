"""Malformed records between good ones never stop the consumer and never lose good data (on either Kafka client)."""

from __future__ import annotations

import math

import msgpack
import pytest

from helpers import SegstreamProcess, produce, read_topic

pytestmark = pytest.mark.integration


def good(i: int) -> dict:
    return {"user_id": f"user-{i % 40}", "action": ["view", "click", "purchase"][i % 3], "ts": 1.7e9 + i,
            "item_id": i % 17, "categories": [f"c{i % 5}"], "value": float(i % 7)}


BAD: list[tuple[bytes | None, str]] = [
    (b"\xc1\xc1", "undecodable"),
    (msgpack.packb([1, 2, 3]), "not_a_map"),
    (msgpack.packb({"action": "view", "ts": 1.7e9}), "missing_field"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": "yesterday"}), "bad_type"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": math.inf}), "non_finite"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": 1.7e9, "value": math.nan}), "non_finite"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": -5}), "ts_out_of_range"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": 4.1e9}), "ts_out_of_range"),
    (msgpack.packb({"user_id": "", "action": "view", "ts": 1.7e9}), "bad_value"),
    (msgpack.packb({"user_id": "u", "action": "view", "ts": 1.7e9, "categories": "drama"}), "bad_type"),
    (b"\x80" + b"x" * 70000, "oversized"),
    (None, "null_value"),
]


def test_bad_records_go_to_the_dead_letter_topic(broker, topics, kafka_client):
    broker.create(topics)
    values: list[bytes | None] = []
    expected_bad: list[tuple[int, bytes | None, str]] = []
    n_good = 0
    for i in range(600):
        values.append(msgpack.packb(good(i)))
        n_good += 1
        if i % 50 == 25:
            raw, reason = BAD[len(expected_bad) % len(BAD)]
            expected_bad.append((len(values), raw, reason))
            values.append(raw)
    produce(broker.bootstrap, topics["input"], values, keys=[b"k"] * len(values))

    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "20", "--batch-max-events", "97",
                            "--kafka-client", kafka_client)
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= len(values), timeout_s=120)
        m = proc.metrics()
        code, summary, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    assert proc.proc.returncode == 0
    # every good event applied, every bad one counted by reason
    assert m["segstream_events_applied_total"] == n_good
    assert m["segstream_dead_letters_total"] == len(expected_bad)
    for reason in {r for _, _, r in expected_bad}:
        want = sum(1 for _, _, r in expected_bad if r == reason)
        assert m[f'segstream_events_invalid_total{{reason="{reason}"}}'] == want, reason
    assert m["segstream_users_tracked"] == 40

    dlq = read_topic(broker.bootstrap, topics["dlq"], expected=len(expected_bad))
    assert len(dlq) == len(expected_bad)
    by_offset = {int(dict(r.headers)["segstream.source.offset"]): r for r in dlq}
    for offset, raw, reason in expected_bad:
        rec = by_offset[offset]
        headers = dict(rec.headers)
        assert rec.value == raw  # original bytes, untouched
        assert headers["segstream.dlq.reason"].decode() == reason
        assert headers["segstream.dlq.detail"]
        assert headers["segstream.source.topic"].decode() == topics["input"]
