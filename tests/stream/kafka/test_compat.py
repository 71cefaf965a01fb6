"""The start-up check of kafka-python's internals: passes on the installed release, fails (one warning, gauge 0,
public path) when an internal is missing or behaves differently, and can be forced to fail for tests.

Clients here point at a closed port: building them contacts no broker, and the checks need none.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import Fetcher
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.record_accumulator import RecordAccumulator
from prometheus_client import CollectorRegistry

from stream.kafka import compat
from stream.kafka.clients import Publisher
from stream.kafka.compat import FORCE_FALLBACK_ENV, check_fetch, check_produce, forced_fallback
from stream.observability.metrics import Metrics

NOWHERE = "127.0.0.1:9"  # api_version given: the clients do not ask a broker for it


@pytest.fixture
def consumer():
    c = KafkaConsumer(bootstrap_servers=NOWHERE, api_version=(2, 6), enable_auto_commit=False)
    yield c
    c.close(autocommit=False)


@pytest.fixture
def producer():
    p = KafkaProducer(bootstrap_servers=NOWHERE, api_version=(2, 6))
    yield p
    p.close(timeout=1)


def _gauge(metrics: Metrics, path: str) -> float | None:
    return metrics.registry.get_sample_value("segstream_kafka_fast_path", {"path": path})


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stream.kafka.compat" and r.levelname == "WARNING"]


def test_the_installed_kafka_python_passes_both_checks_and_the_fast_paths_go_on(consumer, producer, caplog,
                                                                                  monkeypatch):
    monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    assert check_fetch().ok and check_produce().ok and check_produce(producer).ok
    metrics = Metrics(CollectorRegistry())
    assert _gauge(metrics, "fetch") == _gauge(metrics, "produce") == 0  # both series exist before any check
    original = consumer._fetcher.PartitionRecords
    assert compat.install_columnar_fetch(consumer, metrics)
    assert consumer._fetcher.PartitionRecords is not original and issubclass(consumer._fetcher.PartitionRecords,
                                                                               original)
    assert Publisher(producer, metrics).columnar
    assert _gauge(metrics, "fetch") == _gauge(metrics, "produce") == 1
    assert not _warnings(caplog)


@pytest.mark.parametrize("value, off", [("fetch", {"fetch"}), ("produce", {"produce"}),
                                        (" produce , fetch", {"fetch", "produce"}), ("", set())])
def test_the_environment_switch_forces_exactly_the_paths_it_names(monkeypatch, value, off):
    monkeypatch.setenv(FORCE_FALLBACK_ENV, value)
    assert forced_fallback() == off
    for check in (check_fetch(), check_produce()):
        assert check.ok == (check.path not in off)
        assert check.ok or FORCE_FALLBACK_ENV in check.problem


def test_a_misspelt_path_in_the_switch_is_an_error(monkeypatch):
    monkeypatch.setenv(FORCE_FALLBACK_ENV, "fetch,prodcue")
    with pytest.raises(ValueError, match="prodcue"):
        check_produce()


def _rename_record_iterator(monkeypatch):
    """A release that renames an instance attribute the hook reads."""
    init = Fetcher.PartitionRecords.__init__

    def renamed(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.records = self.__dict__.pop("record_iterator")

    monkeypatch.setattr(Fetcher.PartitionRecords, "__init__", renamed)


FETCH_BREAKS = {
    "a method gone": (lambda mp: mp.delattr(Fetcher.PartitionRecords, "_maybe_raise_next_inline_exception"),
                      "Fetcher.PartitionRecords._maybe_raise_next_inline_exception"),
    "a class moved": (lambda mp: mp.setattr(compat, "DefaultRecordBatchBuilder", None),
                      "kafka.record.default_records.DefaultRecordBatchBuilder"),
    "an attribute renamed": (_rename_record_iterator, "record_iterator"),
    # still there, different behaviour: drain no longer ends the iteration, so the hook never ends either
    "drain changed": (lambda mp: mp.setattr(Fetcher.PartitionRecords, "drain", lambda self: None),
                      "does not end at the batches' end"),
}


@pytest.mark.parametrize("name", FETCH_BREAKS)
def test_a_broken_fetch_internal_fails_the_check_with_one_warning_and_the_gauge_at_zero(consumer, caplog,
                                                                                        monkeypatch, name):
    monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    original = consumer._fetcher.PartitionRecords
    breaks, named = FETCH_BREAKS[name]
    breaks(monkeypatch)
    check = check_fetch()
    assert not check.ok and named in check.problem
    metrics = Metrics(CollectorRegistry())
    metrics.kafka_fast_path.labels(path="fetch").set(1)  # so that the 0 below is the check's doing
    assert not compat.install_columnar_fetch(consumer, metrics)
    assert consumer._fetcher.PartitionRecords is original  # kafka-python's own record iterator stays
    assert _gauge(metrics, "fetch") == 0
    (warning,) = _warnings(caplog)
    assert named in warning and "columnar fetch off" in warning


PRODUCE_BREAKS = {
    "a method gone": (lambda mp: mp.delattr(RecordAccumulator, "_tp_lock"), "RecordAccumulator._tp_lock"),
    "a class moved": (lambda mp: mp.setattr(compat, "ProducerBatch", None),
                      "kafka.producer.producer_batch.ProducerBatch"),
    # still there, different behaviour: the batch counts its records another way
    "record count changed": (lambda mp: mp.setattr(ProducerBatch, "record_count", property(lambda self: 0)),
                             "does not hold the run as one batch"),
}


@pytest.mark.parametrize("name", PRODUCE_BREAKS)
def test_a_broken_produce_internal_fails_the_check_with_one_warning_and_the_gauge_at_zero(producer, caplog,
                                                                                          monkeypatch, name):
    monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    breaks, named = PRODUCE_BREAKS[name]
    breaks(monkeypatch)
    check = check_produce(producer)
    assert not check.ok and named in check.problem
    metrics = Metrics(CollectorRegistry())
    metrics.kafka_fast_path.labels(path="produce").set(1)
    assert not Publisher(producer, metrics).columnar  # one KafkaProducer.send per record
    assert _gauge(metrics, "produce") == 0
    (warning,) = _warnings(caplog)
    assert named in warning and "columnar produce off" in warning


def test_the_fetch_check_catches_a_decoder_that_disagrees_with_kafka_python(monkeypatch):
    """The behaviour probe compares record by record, so it is not satisfied by any output."""
    decode = compat.decode_batch
    monkeypatch.setattr(compat, "decode_batch", lambda raw, tp, min_offset=0: decode(raw, tp, min_offset).select(
        slice(0, -1)))
    check = check_fetch()
    assert not check.ok and "differs from kafka-python's record iterator" in check.problem


def test_the_produce_check_catches_a_run_that_reads_back_differently(monkeypatch):
    build = compat.run_builder

    def stale_timestamp(run, *, timestamp_ms, **kw):
        return build(run, timestamp_ms=timestamp_ms + 1, **kw)

    monkeypatch.setattr(compat, "run_builder", stale_timestamp)
    check = check_produce()
    assert not check.ok and "reads back differently" in check.problem


def test_read_committed_consumers_keep_kafka_pythons_fetch_without_a_warning(caplog, monkeypatch):
    monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    c = KafkaConsumer(bootstrap_servers=NOWHERE, api_version=(2, 6), isolation_level="read_committed")
    try:
        assert not compat.install_columnar_fetch(c)
    finally:
        c.close(autocommit=False)
    assert not _warnings(caplog)
