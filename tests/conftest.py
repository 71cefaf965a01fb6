"""Shared fixtures: a real Kafka-protocol broker, fresh metric registries, and process helpers.

Integration tests run against the embedded broker (Tansu) by default. Set
``SEGSTREAM_TEST_BOOTSTRAP=host:port`` to run the very same tests against a
real Kafka cluster instead.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Broker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = Path(os.environ.get("SEGSTREAM_MOVIELENS", REPO.parent / "shared" / "data" / "ml-latest-small"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that talks to a broker is an integration test, marked or not: ``-m "not integration"``
    is then the broker-free unit suite. The kill -9 recovery tests run first."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    # the kill -9 tests first (3 minutes, mostly waiting on process starts, one worker): started last,
    # as collection order has them, they were the suite's tail while the other workers stood idle
    items.sort(key=lambda item: "test_kill_recovery.py" not in item.nodeid)  # stable: otherwise in order


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    external = os.environ.get("SEGSTREAM_TEST_BOOTSTRAP")
    if external:
        yield Broker(external, None)
        return
    from stream.kafka.embedded_broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=str(log)) as b:
        yield Broker(b.bootstrap, b)


@pytest.fixture
def topics() -> dict[str, str]:
    """Unique topic and group names per test, so tests never see each other's records."""
    tag = uuid.uuid4().hex[:8]
    return {"input": f"events-{tag}", "output": f"segments-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}"}


@pytest.fixture(params=["kafka-python", "confluent"])
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run loop's Kafka client (``SEGSTREAM_KAFKA_CLIENT``): a test taking this fixture (or marked
    ``usefixtures("kafka_client")``) runs on both (confluent is skipped where confluent-kafka is not installed).
    The variable is set for the test, so every ``segstream`` child process and every ``Broker.settings``
    follow it without passing the flag."""
    if request.param == "confluent":
        pytest.importorskip("confluent_kafka")
    monkeypatch.setenv("SEGSTREAM_KAFKA_CLIENT", request.param)
    return request.param


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    if not (MOVIELENS / "ratings.csv").is_file():
        pytest.skip(f"MovieLens data not found at {MOVIELENS}: set SEGSTREAM_MOVIELENS to an ml-latest-small directory")
    return MOVIELENS
