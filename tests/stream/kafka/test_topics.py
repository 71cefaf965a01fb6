"""Topic policies: one table in code, the docs showing it, topics created with it, wrong ones reported at start-up."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from stream.kafka.clients import ensure_topics, make_admin
from stream.kafka.topics import POLICIES, TOPIC_POLICIES, check_policies, topic_plan, topics_markdown
from stream.settings import Settings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "topics.md"


def test_docs_topics_shows_the_table_the_code_renders():
    assert topics_markdown() in DOCS.read_text(), "docs/topics.md is stale: paste stream.kafka.topics.topics_markdown()"


def test_every_role_names_a_setting_and_latest_per_key_roles_are_compacted():
    fields = Settings.__dataclass_fields__
    for p in TOPIC_POLICIES:
        assert p.setting is None or p.setting in fields, p.role
    assert {p.role for p in TOPIC_POLICIES if p.cleanup_policy == "compact"} == {
        "segments", "profiles", "model", "state-changelog"}
    assert POLICIES["dead-letters"].configs == {"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000)}
    assert POLICIES["lineage"].configs == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert POLICIES["input"].configs == {}  # not segstream's to set


def test_the_plan_maps_roles_to_the_configured_names():
    s = Settings(output_topic="segs", dlq_topic="dead", model_topic="m")
    parts, configs = topic_plan(s, {"segments": 4, "dead-letters": 2, "model": 1})
    assert parts == {"segs": 4, "dead": 2, "m": 1}
    assert configs["segs"]["cleanup.policy"] == "compact" and configs["m"] == {"cleanup.policy": "compact"}
    parts, configs = topic_plan(s.replace(group_id="g", input_topic="in"), {"state-changelog": 3})
    assert parts == {"g.in.changelog": 3} and configs["g.in.changelog"]["cleanup.policy"] == "compact"
    assert topic_plan(s.replace(changelog_topic="cl"), {"state-changelog": 2})[0] == {"cl": 2}


class _Admin:
    """describe_configs as kafka-python 3.0 answers it: {"topic": {name: {config: {"value": ...}}}}."""

    def __init__(self, configs=None, error=None):
        self.configs, self.error, self.asked = configs or {}, error, None

    def describe_configs(self, resources, config_filter="modified"):
        self.asked = ([r.name for r in resources], config_filter)
        if self.error:
            raise self.error
        return {"topic": {r.name: {k: {"value": v} for k, v in self.configs.get(r.name, {}).items()}
                          for r in resources}}


def test_a_wrong_policy_is_one_line_per_topic_and_unreported_ones_share_one_line():
    admin = _Admin({"a": {"cleanup.policy": "delete"}, "b": {"cleanup.policy": "delete, compact"},
                    "c": {"cleanup.policy": "compact"}})
    lines = check_policies(admin, {"a": "compact", "b": "compact", "c": "compact", "d": "compact", "e": "delete"})
    assert admin.asked == (["a", "b", "c", "d", "e"], "all")
    assert lines[0].startswith("topic a has cleanup.policy=delete, segstream expects compact")
    assert lines[1].startswith("topic b has cleanup.policy=compact,delete, segstream expects compact")
    assert lines[2].startswith("could not verify cleanup.policy of topic(s) d, e: the broker did not report it")
    assert len(lines) == 3


def test_a_broker_that_cannot_describe_configs_is_one_line():
    lines = check_policies(_Admin(error=ConnectionError("socket disconnected")), {"a": "compact", "b": "delete"})
    assert len(lines) == 1 and lines[0].startswith("could not verify cleanup.policy of topic(s) a, b")
    assert "ConnectionError" in lines[0]
    assert check_policies(_Admin(error=AssertionError("not asked")), {}) == []


def _reported(settings: Settings, name: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType  # the test reads the broker as an operator would

    admin = make_admin(settings)
    try:
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all")
    finally:
        admin.close()
    return {k: v["value"] for k, v in got.get("topic", {}).get(name, {}).items()}


@pytest.mark.integration
def test_created_topics_carry_their_policy(broker, topics, kafka_client):
    s = broker.settings(topics, lineage_topic=f"lineage-{topics['group']}", profiles_topic=f"profiles-{topics['group']}")
    parts, configs = topic_plan(s, {"segments": 2, "dead-letters": 2, "lineage": 1, "profiles": 1})
    assert ensure_topics(s, parts, configs=configs) == []  # nothing existed: nothing to report
    for name, want in configs.items():
        got = _reported(s, name)  # Tansu reports the configs a topic was created with (as defaults)
        assert {k: got.get(k) for k in want} == want, name
    assert ensure_topics(s, parts, configs=configs) == []  # existing, and right: still nothing to report


@pytest.mark.integration
def test_start_up_reports_an_existing_topic_with_the_wrong_policy(broker, topics, caplog, kafka_client):
    from stream.runtime.app import run_consumer

    s = broker.settings(topics, lineage_topic=f"lineage-{topics['group']}",
                        profiles_topic=f"profiles-{topics['group']}", decode_process=False)
    # created by someone else first: the output topic deleted by age, the profiles topic with no configs at all
    ensure_topics(s, {s.input_topic: 1, s.output_topic: 1, s.profiles_topic: 1},
                  configs={s.output_topic: {"cleanup.policy": "delete"}})
    stop = threading.Event()
    stop.set()  # start up, then stop before the first poll
    with caplog.at_level(logging.WARNING, logger="stream.kafka"):
        run_consumer(s, stop=stop)
    lines = [r.getMessage() for r in caplog.records if r.name == "stream.kafka.clients" and r.levelno >= logging.WARNING]
    wrong = [ln for ln in lines if s.output_topic in ln]
    assert wrong == [f"topic {s.output_topic} has cleanup.policy=delete, segstream expects compact (see docs/topics.md); "
                     f"fix with: kafka-configs --alter --entity-type topics --entity-name {s.output_topic} "
                     f"--add-config cleanup.policy=compact"]
    about_profiles = [ln for ln in lines if s.profiles_topic in ln]
    assert len(about_profiles) == 1
    if broker.embedded is not None:  # Tansu reports no cleanup.policy for a topic created without one
        assert about_profiles[0].startswith(f"could not verify cleanup.policy of topic(s) {s.profiles_topic}:")
    else:  # Kafka reports its default, delete
        assert about_profiles[0].startswith(f"topic {s.profiles_topic} has cleanup.policy=delete")
    assert len(lines) == 2
    # the topics start-up created carry their policy
    assert _reported(s, s.dlq_topic).get("cleanup.policy") == "delete"
    assert _reported(s, s.lineage_topic).get("retention.ms") == "-1"
