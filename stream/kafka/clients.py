"""Kafka edges: client construction, topic set-up, and a publisher that confirms every send.

Consumers never auto-commit and start from the earliest offset of a new
group; producers wait for all in-sync replicas. Security options
(SASL/SSL) come from :class:`~stream.settings.Settings` and reach every client.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream.kafka.batch_produce import Run, encode_columns, encode_runs
from stream.kafka.compat import append_run, run_error, use_columnar_produce
from stream.kafka.partitioning import partitions_for_keys
from stream.kafka.topics import check_policies
from stream.settings import Settings

if TYPE_CHECKING:  # annotations only: a reader of the topics (stream.client) need not import the metrics stack
    from stream.observability.metrics import Metrics

__all__ = ["make_consumer", "make_producer", "make_stream_consumer", "make_reader_consumer", "make_stream_producer", "make_admin", "ensure_topics",
           "verify_topics", "Publisher", "PublishError", "wait_for_broker", "BrokerConnectionError", "tls_problem"]

log = logging.getLogger(__name__)


def _servers(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.bootstrap.split(",") if s.strip()]


def make_consumer(settings: Settings, *topics: str, **overrides: Any) -> KafkaConsumer:
    cfg: dict[str, Any] = dict(
        bootstrap_servers=_servers(settings),
        client_id=settings.client_id,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.batch_max_events,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=min(100, max(1, settings.batch_max_wait_ms)),
        **settings.kafka_security(),
    )
    if settings.group_instance_id:
        cfg["group_instance_id"] = settings.group_instance_id
    cfg.update(overrides)
    return KafkaConsumer(*topics, **cfg)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    cfg: dict[str, Any] = dict(
        bootstrap_servers=_servers(settings),
        client_id=settings.client_id,
        acks="all",
        linger_ms=5,
        batch_size=256 << 10,
        max_request_size=8 << 20,
        retries=5,
        **settings.kafka_security(),
    )
    cfg.update(overrides)
    return KafkaProducer(**cfg)


def make_stream_consumer(settings: Settings) -> Any:
    """The run loop's consumer on the client ``settings.kafka_client`` names (kafka-python or confluent);
    both answer the run loop's calls (stream/kafka/confluent.py says how librdkafka's are bridged)."""
    if settings.kafka_client == "confluent":
        from stream.kafka.confluent import ConfluentConsumer

        return ConfluentConsumer(settings)
    return make_consumer(settings)


def make_reader_consumer(settings: Settings, client_id: str) -> Any:
    """A consumer outside the group on ``settings.kafka_client``, for partitions it assigns itself (the model
    topic): no group joined, nothing committed. Its ``poll`` gives ConsumerRecords or :class:`Records`
    blocks (:func:`stream.kafka.records.as_records` reads either)."""
    if settings.kafka_client == "confluent":
        from stream.kafka.confluent import ConfluentConsumer

        return ConfluentConsumer(settings, **{"group.id": None, "group.instance.id": None, "client.id": client_id})
    return make_consumer(settings, group_id=None, group_instance_id=None, client_id=client_id)


def make_stream_producer(settings: Settings) -> Any:
    """The run loop's producer (what :class:`Publisher` sends through) on ``settings.kafka_client``.

    No linger: the run loop sends whole record batches (or a checkpoint's records, then confirms them at
    once), and a checkpoint's outbox leaves without a confirm waiting on it; lingering would only hold
    segment events back."""
    if settings.kafka_client == "confluent":
        from stream.kafka.confluent import ConfluentProducer

        return ConfluentProducer(settings, **{"linger.ms": 0})
    return make_producer(settings, linger_ms=0)


def make_admin(settings: Settings, **overrides: Any) -> Any:
    """kafka-python's admin client, or its librdkafka stand-in with ``kafka_client=confluent``
    (:class:`~stream.kafka.confluent_admin.ConfluentAdmin`: the calls below, same shapes)."""
    if settings.kafka_client == "confluent":
        from stream.kafka.confluent_admin import ConfluentAdmin

        return ConfluentAdmin(settings, request_timeout_ms=overrides.get("request_timeout_ms", 10000))
    return KafkaAdminClient(bootstrap_servers=_servers(settings), client_id=f"{settings.client_id}-admin",
                            **settings.kafka_security(), **overrides)


class BrokerConnectionError(ConnectionError):
    """The brokers answer but cannot be used with these settings (certificate not trusted, TLS handshake
    refused, SASL login refused): waiting longer would not help, so start-up stops with this one line."""


class _KafkaLog(logging.Handler):
    """Holds kafka-python's log messages while the start-up probe runs, instead of letting every retry
    print its own error lines: what they say is turned into one line (:func:`_sasl_problem`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._logger = logging.getLogger("kafka")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a malformed record must not break the probe
            pass

    def __enter__(self) -> _KafkaLog:
        self._saved = (self._logger.propagate, self._logger.level)
        self._logger.addHandler(self)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate, level = self._saved
        self._logger.setLevel(level)


def wait_for_broker(settings: Settings, timeout_s: float = 30.0) -> None:
    """Block until the bootstrap servers answer (or raise after ``timeout_s``).

    A broker that answers but refuses these settings stops the wait at once with
    :class:`BrokerConnectionError`, naming the cause: its certificate is not trusted (wrong
    ``SEGSTREAM_SSL_CAFILE``, expired, another host name), the TLS handshake fails (say, a client
    certificate is required), or the SASL login is refused. kafka-python only logs those (and retries
    for ever): TLS is checked with a handshake of our own first (:func:`tls_problem`), SASL read from
    kafka-python's log while the probe runs (held back, so that its retries print nothing)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    said = ""
    tls = settings.security_protocol.upper().endswith("SSL")
    while time.monotonic() < deadline:
        problem = tls_problem(settings) if tls else None  # one handshake: seconds before kafka-python gives up
        if problem:
            raise BrokerConnectionError(problem)
        with _KafkaLog() as seen:
            try:
                left_ms = int(max(1.0, deadline - time.monotonic()) * 1000)
                make_admin(settings, request_timeout_ms=2000, bootstrap_timeout_ms=min(5000, left_ms)).close()
                return
            except Exception as exc:  # NoBrokersAvailable and friends
                last = exc
        problem = _sasl_problem(settings, seen.messages)
        if problem:
            raise BrokerConnectionError(problem) from None
        said = next((m for m in reversed(seen.messages) if "fail" in m.lower() or "error" in m.lower()), said)
        time.sleep(0.2)
    raise TimeoutError(f"no Kafka broker answered at {settings.bootstrap} within {timeout_s:.0f}s "
                       f"({last}{'; last: ' + said if said and str(last) not in said else ''})")


def _sasl_problem(settings: Settings, messages: Sequence[str]) -> str | None:
    """The SASL login refusal kafka-python logged while connecting, in one line (None: none)."""
    if settings.security_protocol.upper().startswith("SASL"):
        refused = [m for m in messages if any(s in m for s in (
            "SaslAuthenticationFailed", "Authentication failed", "SaslHandshake failed", "UnsupportedSaslMechanism",
            "does not support", "SASL authentication error"))]  # the last: librdkafka's (confluent_admin.py)
        # kafka-python logs some refusals only as a lost connection (a SCRAM server-final message without
        # a signature raises KeyError 'v'): a connection lost once ApiVersions has answered (the broker
        # version is known) was lost during the SASL exchange, the only step that follows
        refused += [m for m in messages if "Connection lost" in m and "broker_version=(" in m]
        if refused:
            said = [m for m in refused if "SaslAuthenticationFailed" in m] or refused  # the broker's own words first
            detail = said[-1].split(">: ", 1)[-1][:200]
            return (f"SASL login as {settings.sasl_username!r} ({settings.sasl_mechanism or 'PLAIN'}) refused by "
                    f"{settings.bootstrap}: check SEGSTREAM_SASL_USERNAME, SEGSTREAM_SASL_PASSWORD and "
                    f"SEGSTREAM_SASL_MECHANISM ({detail})")
    return None


def tls_problem(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """A TLS handshake with the first reachable bootstrap server, set up as kafka-python sets up its own
    (``SEGSTREAM_SSL_CAFILE`` or the system's CAs, the client certificate if any, host name checked);
    what went wrong, in one line, or None (handshake fine, or no server reachable: not a TLS matter)."""
    try:
        ctx = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        return (f"TLS settings unusable: {exc} (SEGSTREAM_SSL_CAFILE={settings.ssl_cafile!r}, "
                f"SEGSTREAM_SSL_CERTFILE={settings.ssl_certfile!r}, SEGSTREAM_SSL_KEYFILE={settings.ssl_keyfile!r})")
    for server in _servers(settings):
        host, _, port = server.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        except (OSError, ValueError):
            continue
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as exc:
            trusted = settings.ssl_cafile or "the system's CAs"
            return (f"TLS: the certificate of broker {server} is not trusted: {exc.verify_message} "
                    f"(trusting {trusted}; see SEGSTREAM_SSL_CAFILE)")
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            return (f"TLS handshake with broker {server} failed: {reason} (a TLS listener? a client certificate "
                    f"required: SEGSTREAM_SSL_CERTFILE, SEGSTREAM_SSL_KEYFILE)")
        finally:
            sock.close()
    return None


def ensure_topics(settings: Settings, topics: dict[str, int], *, configs: dict[str, dict[str, str]] | None = None,
                  replication: int = 1) -> list[str]:
    """Create missing topics (name -> partitions) with their ``configs``; check the existing ones.

    An existing topic is left as it is, but when ``configs`` names a
    ``cleanup.policy`` for it, a differing policy is logged as one warning line
    per topic (and one line for those the broker would not describe): see
    :func:`stream.kafka.topics.check_policies`. Returns those lines.
    ``configs`` usually comes from :func:`stream.kafka.topics.topic_plan`.
    """
    configs = configs or {}
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, parts, replication, topic_configs=configs.get(name, {}))
               for name, parts in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topic(s) %s", ", ".join(
                f"{t.name} ({t.num_partitions} partitions{''.join(f', {k}={v}' for k, v in sorted(t.topic_configs.items()))})"
                for t in new))
        return _report(check_policies(admin, _policies({n: configs.get(n, {}) for n in topics if n in existing})))
    finally:
        admin.close()


def verify_topics(settings: Settings, configs: dict[str, dict[str, str]]) -> list[str]:
    """Check the ``cleanup.policy`` of existing topics without creating any (for ``create_topics=false``)."""
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        return _report(check_policies(admin, _policies({n: c for n, c in configs.items() if n in existing})))
    finally:
        admin.close()


def _policies(configs: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: c["cleanup.policy"] for name, c in configs.items() if "cleanup.policy" in c}


def _report(lines: list[str]) -> list[str]:
    for line in lines:
        log.warning("%s", line)
    return lines


def _pieces(flat: bytes, lengths: np.ndarray) -> list[bytes | None]:
    """Consecutive pieces of ``flat`` (``-1``: None)."""
    out: list[bytes | None] = []
    at = 0
    for n in np.asarray(lengths).tolist():
        out.append(None if n < 0 else flat[at:at + n])
        at += max(n, 0)
    return out


class PublishError(RuntimeError):
    """Outputs could not be confirmed: offsets must not be committed."""


class _Pending(NamedTuple):
    """A send awaiting confirmation: one record (``future`` of ``send``) or one run of a partition's records."""

    topic: str
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: list[tuple[str, bytes]] | None
    partition: int | None
    future: Any
    run: bool = False
    encoded: Run | None = None  # a run sent from columns (send_columns): re-sent as it is

    @property
    def count(self) -> int:
        return self.encoded.count if self.encoded is not None else len(self.keys)


def _last_offset(p: _Pending) -> int | None:
    """The offset of the last record of a confirmed send (None: the client did not say)."""
    if p.run:  # a whole batch: its future's value is (base offset, log append time, per-record errors)
        return int(p.future.value[0]) + p.count - 1
    if hasattr(p.future, "offset"):  # librdkafka's delivery report (stream/kafka/confluent.py)
        return None if p.future.offset is None else int(p.future.offset)
    return int(p.future.value.offset)


class Publisher:
    """Sends records and, on :meth:`confirm`, blocks until each one is acknowledged.

    A failed send is re-sent (up to ``retries`` rounds) before confirm gives
    up with :class:`PublishError`; the caller then must not commit offsets.
    With ``columnar`` (the default), :meth:`send_many` writes each partition's
    records as whole record batches (:mod:`stream.kafka.batch_produce`) instead of
    one ``send`` per record, unless the start-up check of kafka-python's
    internals (:func:`stream.kafka.compat.use_columnar_produce`) fails: then
    ``columnar`` is False, one warning says why, and the
    ``segstream_kafka_fast_path{path="produce"}`` gauge of ``metrics`` reads 0.
    """

    def __init__(self, producer: KafkaProducer, metrics: Metrics | None = None, *, retries: int = 3,
                 timeout_s: float = 60.0, columnar: bool = True) -> None:
        self.producer = producer
        self.metrics = metrics
        self.retries = retries
        self.timeout_s = timeout_s
        self.columnar = columnar and use_columnar_produce(producer, metrics)
        self._pending: list[_Pending] = []
        self._tracked: set[str] = set()
        # (topic, partition) -> offset of the last confirmed record sent there, for the topics of track()
        self.last_offsets: dict[tuple[str, int], int] = {}

    def track(self, topic: str) -> None:
        """Keep the offset of the last record confirmed per partition of ``topic`` (:attr:`last_offsets`):
        the changelog's local cache names the marker it covers by its offset."""
        self._tracked.add(topic)

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        fut = self.producer.send(topic, key=key, value=value, headers=headers)
        self._pending.append(_Pending(topic, (key,), (value,), headers, None, fut))

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Send keyed records, partitioned exactly as Kafka's default partitioner would, hashed per batch."""
        if not keys:
            return
        count = len(self.producer.partitions_for(topic))
        partitions = partitions_for_keys(keys, count)
        if self.columnar:
            self._send_runs(topic, keys, values, partitions)
            return
        send, pending = self.producer.send, self._pending
        for key, value, part in zip(keys, values, partitions.tolist()):
            pending.append(_Pending(topic, (key,), (value,), None, part,
                                    send(topic, key=key, value=value, partition=part)))

    def send_to_partition(self, topic: str, partition: int, keys: Sequence[bytes | None],
                          values: Sequence[bytes | None]) -> None:
        """Send records to one chosen partition, in order (a changelog partition mirrors an input one)."""
        if not keys:
            return
        if self.columnar:
            self._send_runs(topic, keys, values, np.full(len(keys), partition, dtype=np.int64))
            return
        send, pending = self.producer.send, self._pending
        for key, value in zip(keys, values):
            pending.append(_Pending(topic, (key,), (value,), None, partition,
                                    send(topic, key=key, value=value, partition=partition)))

    def send_columns(self, topic: str, partition: int, key_bytes: bytes, key_lengths: np.ndarray,
                     value_bytes: bytes, value_lengths: np.ndarray) -> None:
        """Records for one partition given as columns (:func:`~stream.kafka.batch_produce.encode_columns`:
        no Python step per record); one ``send`` each when the columnar produce is off."""
        if not len(key_lengths):
            return
        if not self.columnar:
            self.send_to_partition(topic, partition, _pieces(key_bytes, key_lengths),
                                   _pieces(value_bytes, value_lengths))
            return
        for run in encode_columns(key_bytes, key_lengths, value_bytes, value_lengths,
                                  batch_size=self.producer.config["batch_size"]):
            self._pending.append(_Pending(topic, (), (), None, partition,
                                          append_run(self.producer, topic, partition, run), run=True, encoded=run))

    def _send_runs(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None],
                   partitions: np.ndarray) -> None:
        order = np.argsort(partitions, kind="stable")
        bounds = np.flatnonzero(np.diff(partitions[order])) + 1
        config = self.producer.config
        for rows in np.split(order, bounds):
            part = int(partitions[rows[0]])
            rows_list = rows.tolist()
            pk = [keys[i] for i in rows_list]
            pv = [values[i] for i in rows_list]
            for run in encode_runs(pk, pv, batch_size=config["batch_size"], max_request_size=config["max_request_size"]):
                self._pending.append(_Pending(topic, pk[run.start:run.stop], pv[run.start:run.stop], None, part,
                                              append_run(self.producer, topic, part, run), run=True))

    def __len__(self) -> int:
        return sum(p.count for p in self._pending)

    def confirm(self) -> int:
        """Flush and check every send since the last confirm; returns how many records were confirmed."""
        pending, self._pending = self._pending, []
        confirmed = 0
        for attempt in range(self.retries + 1):
            self.producer.flush(timeout=self.timeout_s)
            failed: list[_Pending] = []
            for p in pending:
                error = self._outcome(p)
                if error is None:
                    confirmed += p.count
                    if p.topic in self._tracked and p.partition is not None:
                        last = _last_offset(p)
                        key = (p.topic, p.partition)
                        if last is not None:
                            self.last_offsets[key] = max(last, self.last_offsets.get(key, -1))
                    continue
                failed.append(p)
                if self.metrics is not None:
                    self.metrics.publish_failures.inc(p.count)
                log.warning("send of %d record(s) to %s failed (attempt %d): %s", p.count, p.topic, attempt + 1, error)
            if not failed:
                return confirmed
            pending = []
            time.sleep(min(2.0, 0.1 * 2**attempt))
            for p in failed:
                if p.encoded is not None:
                    self._pending.append(p._replace(future=append_run(self.producer, p.topic, p.partition, p.encoded)))
                elif p.run:
                    self._send_runs(p.topic, p.keys, p.values, np.full(p.count, p.partition, dtype=np.int64))
                else:
                    self._pending.append(p._replace(future=self.producer.send(
                        p.topic, key=p.keys[0], value=p.values[0], headers=p.headers, partition=p.partition)))
            pending, self._pending = self._pending, []
        raise PublishError(f"{sum(p.count for p in pending)} records could not be published after "
                           f"{self.retries + 1} attempts")

    def _outcome(self, p: _Pending) -> BaseException | None:
        if p.run:
            return run_error(p.future)
        fut = p.future
        if fut.is_done and fut.succeeded():
            return None
        try:
            fut.get(timeout=self.timeout_s)
            return None
        except KafkaError as exc:
            return exc
