"""Topic set-up over librdkafka's ``AdminClient``, answering the calls :mod:`stream.kafka.clients` makes.

With ``SEGSTREAM_KAFKA_CLIENT=confluent`` the admin work of start-up (waiting
for the broker, counting the input's partitions, creating the output topics,
checking their ``cleanup.policy``) goes through librdkafka too, so that a
cluster reachable only with librdkafka's SASL mechanisms (OAUTHBEARER,
GSSAPI) can be set up. :class:`ConfluentAdmin` offers the part of
kafka-python's ``KafkaAdminClient`` those calls use, with its return shapes.
"""

from __future__ import annotations

import logging
from typing import Any

from stream.kafka.confluent import _base, _error, require_confluent
from stream.settings import Settings

__all__ = ["ConfluentAdmin"]

_LOG = logging.getLogger("kafka.librdkafka")


class ConfluentAdmin:
    """``list_topics``, ``describe_topics``, ``create_topics``, ``describe_configs`` as kafka-python returns them."""

    def __init__(self, settings: Settings, request_timeout_ms: int = 10000) -> None:
        ck = require_confluent()
        from confluent_kafka.admin import AdminClient

        self._ck = ck
        self.timeout_s = request_timeout_ms / 1000.0
        # librdkafka's log lines and errors through Python logging, under "kafka": start-up's broker probe
        # (wait_for_broker) holds that logger's messages and turns a refused SASL login into one line, as it
        # does kafka-python's; left to librdkafka, every reconnect would print its own line to stderr
        cfg = {**_base(settings), "client.id": f"{settings.client_id}-admin", "logger": _LOG,
               "error_cb": lambda err: _LOG.error("%s", err.str())}
        try:
            self._admin = AdminClient(cfg)
        except ck.KafkaException as exc:  # a configuration librdkafka cannot run (e.g. GSSAPI without Cyrus SASL)
            raise SystemExit(f"librdkafka refused the admin client configuration: {_error(exc)}") from None
        # like KafkaAdminClient, fail here when no broker answers (wait_for_broker relies on it)
        try:
            self._admin.list_topics(timeout=self.timeout_s)
        finally:
            self._admin.poll(0)  # serves the queued log lines and errors to _LOG

    def list_topics(self) -> list[str]:
        return sorted(self._admin.list_topics(timeout=self.timeout_s).topics)

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        meta = self._admin.list_topics(timeout=self.timeout_s).topics
        return [{"topic": t, "partitions": [{"partition": p} for p in sorted(meta[t].partitions)]}
                for t in topics if t in meta and meta[t].error is None]

    def create_topics(self, new_topics: list[Any]) -> None:
        """Create kafka-python ``NewTopic``s; an existing topic raises kafka-python's TopicAlreadyExistsError."""
        from confluent_kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        futures = self._admin.create_topics([
            NewTopic(t.name, t.num_partitions, t.replication_factor, config=dict(t.topic_configs or {}))
            for t in new_topics], request_timeout=self.timeout_s)
        exists = False
        for fut in futures.values():
            try:
                fut.result(self.timeout_s)
            except self._ck.KafkaException as exc:
                if exc.args and exc.args[0].code() == self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    exists = True
                    continue
                raise _error(exc) from None
        if exists:
            raise TopicAlreadyExistsError("some topics existed already")

    def describe_configs(self, resources: list[Any], config_filter: str = "all") -> dict[str, dict[str, dict]]:
        """``{"topic": {name: {key: {"value": ...}}}}`` for kafka-python ``ConfigResource``s of topics."""
        from confluent_kafka.admin import ConfigResource

        futures = self._admin.describe_configs([ConfigResource("topic", r.name) for r in resources],
                                               request_timeout=self.timeout_s)
        out: dict[str, dict] = {}
        for res, fut in futures.items():
            entries = fut.result(self.timeout_s)
            out[res.name] = {k: {"value": e.value} for k, e in entries.items()}
        return {"topic": out}

    def close(self) -> None:
        """Nothing to release: librdkafka's handle goes with the object."""
