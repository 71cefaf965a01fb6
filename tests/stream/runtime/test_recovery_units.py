"""Unit tests: security pass-through, static membership, back-pressure, output change ids."""

from __future__ import annotations

import numpy as np
import pytest

from stream.contracts.user_segments import change_id, change_ids, decode_segment_event, encode_segment_changes
from stream.kafka.clients import make_consumer
from stream.runtime.batch_result import SegmentChanges
from stream.settings import Settings


def test_sasl_ssl_settings_reach_kafka_python():
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                 sasl_password="pw", ssl_cafile="/etc/ca.pem", ssl_certfile="/etc/c.pem", ssl_keyfile="/etc/k.pem")
    assert s.kafka_security() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "pw", "ssl_check_hostname": True, "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/c.pem", "ssl_keyfile": "/etc/k.pem"}
    assert Settings().kafka_security() == {"security_protocol": "PLAINTEXT"}


def test_metrics_bind_loopback_by_default_and_configurable():
    assert Settings().metrics_host == "127.0.0.1"
    assert Settings.from_env({"SEGSTREAM_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def test_static_membership_is_passed_to_the_consumer():
    c = make_consumer(Settings(bootstrap="127.0.0.1:1", group_instance_id="pod-0"), api_version=(2, 5))
    try:
        assert c.config["group_instance_id"] == "pod-0"
    finally:
        c.close()
    c = make_consumer(Settings(bootstrap="127.0.0.1:1"), api_version=(2, 5))
    try:
        assert c.config["group_instance_id"] is None
    finally:
        c.close()


def test_slow_batches_shrink_the_batch_size_and_fast_ones_grow_it_back():
    from prometheus_client import CollectorRegistry

    from stream.observability.metrics import Metrics
    from stream.runtime.runner import StreamRunner

    r = StreamRunner(Settings(batch_max_events=1000, max_poll_interval_ms=8000), None, None, None,  # type: ignore[arg-type]
                     Metrics(CollectorRegistry()))
    r._pace(3.0, 1000)  # > 2 s, a quarter of the poll budget
    assert r._batch_cap == 500
    r._pace(2.5, 500)
    assert r._batch_cap == 250
    r._pace(0.01, 250)
    r._pace(0.01, 500)
    r._pace(0.01, 1000)
    assert r._batch_cap == 1000
    aligned = StreamRunner(Settings(batch_max_events=1000, max_poll_interval_ms=8000, aligned_batches=True), None,  # type: ignore[arg-type]
                           None, None, Metrics(CollectorRegistry()))  # type: ignore[arg-type]
    aligned._pace(3.0, 1000)
    assert aligned._batch_cap == 1000  # fixed blocks: determinism first


def test_change_ids_are_deterministic_and_published():
    ch = SegmentChanges(["a", "b"], np.array([1, 2]), np.array([-1, 1]), np.array([0.1, 0.2], np.float32),
                        np.array([1, 3], np.uint32), np.array([1.7e9, 1.7e9]), np.array([0, -1]), 4)
    ids = [change_id("a", 2, 10, 1), change_id("b", 2, 11, 2)]
    assert len(set(ids)) == 2
    (_, va), (_, vb) = encode_segment_changes(ch, 1.7e9, ids)
    assert decode_segment_event(va)["change_id"] == ids[0]
    assert decode_segment_event(vb)["change_id"] == ids[1]


def test_change_ids_take_the_source_record_or_the_position_the_state_reflects():
    ch = SegmentChanges(["a", "b", "c"], np.array([1, 2, 3]), np.full(3, -1), np.zeros(3, np.float32),
                        np.ones(3, np.uint32), np.zeros(3), np.array([1, -1, 0]), 4)
    parts, offs = np.array([0, 1, 2], np.int32), np.array([7, 8, 9])
    # a batch: changes with no source event take the batch's last record
    assert change_ids(ch, parts, offs) == [change_id("a", 1, 8, 1), change_id("b", 2, 9, 2), change_id("c", 0, 7, 3)]
    # no batch (users assigned when the first model arrives): each takes its partition's reflected offset
    ch.source_index = np.full(3, -1)
    assert change_ids(ch, (), (), reflected=([4, 5, 4], [10, 20, 10])) == [
        change_id("a", 4, 10, 1), change_id("b", 5, 20, 2), change_id("c", 4, 10, 3)]
    with pytest.raises(ValueError):
        change_ids(ch, (), ())
