"""Every topic segstream reads or writes, with the configuration it must have: one table.

Kafka is the store of record for what segstream publishes, so a topic's
``cleanup.policy`` is part of its contract. Where the value of a record is the
latest state of its key (a user's segment, a segment's profile, the shared
model), the topic is compacted: Kafka then keeps the last record of every key
for as long as the key lives, and a reader that starts from the beginning
(:class:`stream.client.SegmentTable`) rebuilds the current state without the
whole history. Where the records are a history (lineage) or evidence kept for a
while (dead letters), the topic is deleted by age, with a retention chosen here.

:data:`TOPIC_POLICIES` is that table. Start-up (:func:`topic_plan` ->
:func:`stream.kafka.clients.ensure_topics`) creates missing topics with these
configs and reports existing ones whose ``cleanup.policy`` differs;
``docs/topics.md`` shows :func:`topics_markdown` (a test keeps it current).

    >>> from stream.settings import Settings
    >>> parts, configs = topic_plan(Settings(), {"segments": 3, "dead-letters": 3})
    >>> parts
    {'user-segments': 3, 'user-events-dlq': 3}
    >>> configs["user-segments"]["cleanup.policy"], configs["user-events-dlq"]["retention.ms"]
    ('compact', '604800000')
    >>> policy_of({"cleanup.policy": "delete, compact"}) == policy_of({"cleanup.policy": "compact,delete"})
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType

from stream.settings import Settings

__all__ = ["TopicPolicy", "TOPIC_POLICIES", "POLICIES", "topic_plan", "topic_name", "policy_of", "check_policies",
           "topics_markdown", "DAY_MS"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicPolicy:
    """One topic role: where its name is set, what its records are, and the configs segstream gives it."""

    role: str
    setting: str | None  #: the Settings field naming the topic; None: reserved, no topic yet
    key: str
    value: str  #: where the value's schema is defined
    writer: str
    readers: str
    configs: Mapping[str, str] = field(default_factory=dict)  #: set when segstream creates the topic
    created_by: str = "`segstream run`"
    why: str = ""

    @property
    def cleanup_policy(self) -> str | None:
        return self.configs.get("cleanup.policy")

    def retention(self) -> str:
        """Human reading of the retention configs (for the docs table).

        >>> POLICIES["dead-letters"].retention()
        '7 days (`retention.ms=604800000`)'
        """
        if self.cleanup_policy == "compact":
            tomb = self.configs.get("delete.retention.ms")
            return ("latest record per key, kept until the key is deleted" +
                    (f"; tombstones kept {_duration(tomb)} (`delete.retention.ms={tomb}`)" if tomb else ""))
        ms = self.configs.get("retention.ms")
        if ms is None:
            return "the broker's default (`retention.ms` not set by segstream)"
        return f"{_duration(ms)} (`retention.ms={ms}`)"


def _duration(ms: str) -> str:
    n = int(ms)
    if n < 0:
        return "forever"
    if n % DAY_MS == 0:
        days = n // DAY_MS
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{n} ms"


#: topic role -> policy. The first column of docs/topics.md; start-up creates and checks from it.
TOPIC_POLICIES: tuple[TopicPolicy, ...] = (
    TopicPolicy(
        role="input", setting="input_topic", key="user id (UTF-8)", value="input contract v1 (`state/events.py`)",
        writer="your event producers (`segstream produce` for recorded logs)", readers="`segstream run` (consumer group)",
        configs={}, created_by="your producers (`segstream produce --partitions N` creates it with broker defaults)",
        why="not segstream's to set: keep it longer than the longest outage after which segstream must catch up"),
    TopicPolicy(
        role="segments", setting="output_topic", key="user id (UTF-8)",
        value="`user-segments` v1 (`stream/contracts/user_segments.py`); tombstone = user erased",
        writer="`segstream run`", readers="recommenders (`SegmentTable`, `segstream lookup`)",
        configs={"cleanup.policy": "compact", "delete.retention.ms": str(DAY_MS)},
        why="a record is the user's current segment: compaction keeps the latest per user, so a reader that "
            "starts from the beginning sees every user once; an erasure's tombstone stays a day, then the user "
            "is gone from the topic"),
    TopicPolicy(
        role="dead-letters", setting="dlq_topic", key="the rejected record's key",
        value="the rejected record's bytes; `segstream.dlq.*` and `segstream.source.*` headers "
              "(`stream/contracts/user_segments.py`)",
        writer="`segstream run`", readers="operators",
        configs={"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        why="evidence for a producer bug, kept long enough to be looked at and replayed; keys may be null, "
            "so it cannot be compacted"),
    TopicPolicy(
        role="lineage", setting="lineage_topic", key="segment id (decimal UTF-8)",
        value="`segment-lineage` v1 (`stream/contracts/lineage_profiles.py`)",
        writer="`segstream run`", readers="recommenders, analysts",
        configs={"cleanup.policy": "delete", "retention.ms": "-1"},
        why="the only record of where a segment id came from and where it went (ids are never reused); a few "
            "records per model update, so it is kept forever; not compacted, since a segment's born and "
            "retired records are both needed"),
    TopicPolicy(
        role="profiles", setting="profiles_topic", key="segment id (decimal UTF-8)",
        value="`segment-profiles` v2 (`stream/contracts/lineage_profiles.py`)",
        writer="`segstream run`", readers="recommenders, dashboards",
        configs={"cleanup.policy": "compact"},
        why="a record is the segment's current profile: the latest per segment is what a reader wants"),
    TopicPolicy(
        role="model", setting="model_topic", key="`model` or `summary/<instance>`",
        value="`segstream.model/1` (`state/global_model.py`)",
        writer="`segstream run` with `--global-model`", readers="every `segstream run` instance of the group",
        configs={"cleanup.policy": "compact"}, created_by="`segstream run` with `--global-model`",
        why="the latest model and the latest summary of each instance are all a starting instance needs"),
    TopicPolicy(
        role="state-changelog", setting="changelog_topic", key="user id (UTF-8), or `__checkpoint__`",
        value="a user's state row, or only its contract tail once evicted; tombstone = user erased; "
              "`__checkpoint__`: the input offset a checkpoint covers and its outbox (the segment changes it "
              "publishes); `__model__`: the segment model "
              "(`stream/runtime/changelog.py`)",
        writer="`segstream run` (partition p holds the state of input partition p)",
        readers="`segstream run`, when it is assigned a partition",
        configs={"cleanup.policy": "compact", "delete.retention.ms": str(DAY_MS)},
        created_by="`segstream run` (unless `SEGSTREAM_CHANGELOG=false`), with the input topic's partition count",
        why="per-user state is latest-per-key by nature: compaction keeps the last record of each user and "
            "the last checkpoint marker, which is all a restore reads; an erasure's tombstone stays a day"),

)

POLICIES: dict[str, TopicPolicy] = {p.role: p for p in TOPIC_POLICIES}


def topic_name(settings: Settings, role: str) -> str:
    """The topic a role is mapped to by ``settings`` (KeyError for an unknown or reserved role)."""
    setting = POLICIES[role].setting
    if setting == "changelog_topic":
        return settings.changelog_name
    if setting is None:
        raise KeyError(f"topic role {role!r} is reserved: no setting names its topic yet")
    return str(getattr(settings, setting))


def topic_plan(settings: Settings, partitions: Mapping[str, int]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """(topic -> partitions, topic -> configs) for the roles in ``partitions``: what ``ensure_topics`` takes."""
    parts: dict[str, int] = {}
    configs: dict[str, dict[str, str]] = {}
    for role, n in partitions.items():
        name = topic_name(settings, role)
        parts[name] = n
        configs[name] = dict(POLICIES[role].configs)
    return parts, configs


def policy_of(configs: Mapping[str, Any]) -> frozenset[str] | None:
    """The ``cleanup.policy`` of a config map as a set (``compact,delete`` == ``delete, compact``)."""
    raw = configs.get("cleanup.policy")
    if isinstance(raw, Mapping):  # describe_configs gives {name: {"value": ...}}
        raw = raw.get("value")
    if raw is None:
        return None
    return frozenset(p.strip() for p in str(raw).split(",") if p.strip())


def check_policies(admin: Any, expected: Mapping[str, str]) -> list[str]:
    """Compare the ``cleanup.policy`` of existing topics (name -> expected policy) with the broker's.

    Returns the warning lines, one per topic whose policy differs, and one line
    naming every topic whose policy the broker did not report (it cannot
    describe configs, or does not report that one). Only ``cleanup.policy`` is
    checked: retention is the operator's to tune, a wrong policy is a
    correctness problem (a deleted user-segments record is a lost user).
    """
    if not expected:
        return []
    names = sorted(expected)
    try:
        # All configs, unfiltered: some brokers (Tansu) report the configs a topic was created with as defaults,
        # and drop the connection when asked for named configs.
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names],
                                           config_filter="all")
        by_topic = described.get("topic", {}) if isinstance(described, Mapping) else {}
    except Exception as exc:  # an old broker, an authorisation failure, an unsupported request
        return [f"could not verify cleanup.policy of topic(s) {', '.join(names)}: the broker did not describe "
                f"their configs ({type(exc).__name__}: {exc}); see docs/topics.md for what each needs"]
    lines: list[str] = []
    unknown: list[str] = []
    for name in names:
        want = policy_of({"cleanup.policy": expected[name]})
        got = policy_of(by_topic.get(name) or {})
        if got is None:
            unknown.append(name)
        elif got != want:
            lines.append(f"topic {name} has cleanup.policy={','.join(sorted(got))}, segstream expects "
                         f"{expected[name]} (see docs/topics.md); fix with: kafka-configs --alter --entity-type "
                         f"topics --entity-name {name} --add-config cleanup.policy={expected[name]}")
    if unknown:
        lines.append(f"could not verify cleanup.policy of topic(s) {', '.join(unknown)}: the broker did not "
                     f"report it; see docs/topics.md for what each needs")
    return lines


def topics_markdown(settings: Settings | None = None) -> str:
    """The table of docs/topics.md and the reason for each policy (topic names from ``settings``, default when None)."""
    settings = settings or Settings()
    rows = ["| Role | Topic (setting) | Key | Value | `cleanup.policy` | Retention | Written by | Read by | Created by |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in TOPIC_POLICIES:
        if p.setting is None:
            topic = "(reserved)"
        else:
            env = Settings.__dataclass_fields__[p.setting].metadata["env"]
            topic = f"`{topic_name(settings, p.role)}` (`{env}`)"
        policy = f"`{p.cleanup_policy}`" if p.cleanup_policy else "not set by segstream"
        rows.append(f"| {p.role} | {topic} | {p.key} | {p.value} | {policy} | {p.retention()} | {p.writer} | "
                    f"{p.readers} | {p.created_by} |")
    rows.append("")
    rows.extend(f"- **{p.role}**: {p.why}." for p in TOPIC_POLICIES)
    return "\n".join(rows)
