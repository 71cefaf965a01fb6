"""The librdkafka transport without a broker: settings -> librdkafka configuration (security for every
protocol and mechanism, the group and producer choices), the refusals, and the missing-extra error."""

from __future__ import annotations

import sys

import pytest

from stream.kafka.confluent import MISSING_EXTRA, consumer_config, producer_config, require_confluent
from stream.kafka.security import librdkafka_security
from stream.settings import Settings, SettingsError

CERTS = {"ssl_cafile": "/etc/ca.pem", "ssl_certfile": "/etc/c.pem", "ssl_keyfile": "/etc/k.pem"}
VERIFY = {"enable.ssl.certificate.verification": True, "ssl.endpoint.identification.algorithm": "https"}
FILES = {"ssl.ca.location": "/etc/ca.pem", "ssl.certificate.location": "/etc/c.pem", "ssl.key.location": "/etc/k.pem"}


def confluent(**kw) -> Settings:
    return Settings(kafka_client="confluent", **kw)


def test_plaintext_is_the_protocol_alone():
    assert librdkafka_security(confluent()) == {"security.protocol": "PLAINTEXT"}


def test_ssl_maps_the_ca_and_the_client_certificate_and_verifies_the_host():
    assert librdkafka_security(confluent(security_protocol="SSL", **CERTS)) == {
        "security.protocol": "SSL", **VERIFY, **FILES}
    assert librdkafka_security(confluent(security_protocol="SSL", ssl_cafile="/etc/ca.pem")) == {
        "security.protocol": "SSL", **VERIFY, "ssl.ca.location": "/etc/ca.pem"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_user_and_password_mechanisms_match_kafka_python(mechanism, protocol):
    s = confluent(security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="svc", sasl_password="pw",
                  **CERTS)
    tls = {**VERIFY, **FILES} if protocol == "SASL_SSL" else {}
    assert librdkafka_security(s) == {"security.protocol": protocol, "sasl.mechanism": mechanism,
                                      "sasl.username": "svc", "sasl.password": "pw", **tls}
    # the same choices as the kafka-python mapping
    kp = s.replace(kafka_client="kafka-python").kafka_security()
    assert (kp["security_protocol"], kp["sasl_mechanism"], kp["sasl_plain_username"], kp["sasl_plain_password"]) == (
        protocol, mechanism, "svc", "pw")


def test_sasl_without_a_mechanism_is_plain_on_both_clients():
    s = confluent(security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password="pw")
    assert librdkafka_security(s)["sasl.mechanism"] == "PLAIN"
    assert s.replace(kafka_client="kafka-python").kafka_security()["sasl_mechanism"] == "PLAIN"


def test_oauthbearer_is_oidc_client_credentials():
    s = confluent(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_username="client",
                  sasl_password="secret", sasl_oauthbearer_token_url="https://idp/token")
    assert librdkafka_security(s) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "client", "sasl.oauthbearer.client.secret": "secret",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token", **VERIFY}


def test_gssapi_is_kerberos_with_principal_and_keytab():
    s = confluent(security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI", sasl_username="segstream@REALM",
                  sasl_kerberos_keytab="/etc/segstream.keytab")
    assert librdkafka_security(s) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI", "sasl.kerberos.service.name": "kafka",
        "sasl.kerberos.principal": "segstream@REALM", "sasl.kerberos.keytab": "/etc/segstream.keytab"}


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "GSSAPI"])
def test_kafka_python_refuses_librdkafka_only_mechanisms_with_one_clear_message(mechanism):
    with pytest.raises(SettingsError, match=f"SEGSTREAM_SASL_MECHANISM={mechanism} needs SEGSTREAM_KAFKA_CLIENT=confluent"):
        Settings.from_env({"SEGSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "SEGSTREAM_SASL_MECHANISM": mechanism,
                           "SEGSTREAM_SASL_OAUTHBEARER_TOKEN_URL": "https://idp/token"})


def test_oauthbearer_needs_its_token_endpoint_and_unknown_mechanisms_are_refused():
    with pytest.raises(SettingsError, match="SEGSTREAM_SASL_OAUTHBEARER_TOKEN_URL"):
        confluent(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
    with pytest.raises(SettingsError, match="SEGSTREAM_SASL_MECHANISM"):
        Settings(sasl_mechanism="SCRAM-SHA-1")
    with pytest.raises(SettingsError, match="SEGSTREAM_KAFKA_CLIENT"):
        Settings(kafka_client="rdkafka")


def test_consumer_config_matches_the_kafka_python_consumer_choices():
    s = confluent(bootstrap="b1:9092,b2:9092", group_id="g", client_id="c", session_timeout_ms=6000,
                  heartbeat_interval_ms=1000, max_poll_interval_ms=60000, group_instance_id="pod-0",
                  batch_max_wait_ms=20)
    cfg = consumer_config(s)
    assert {k: cfg[k] for k in ("bootstrap.servers", "client.id", "group.id", "group.instance.id",
                                "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
                                "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
                                "fetch.wait.max.ms", "security.protocol")} == {
        "bootstrap.servers": "b1:9092,b2:9092", "client.id": "c", "group.id": "g", "group.instance.id": "pod-0",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 60000,
        "fetch.wait.max.ms": 100, "security.protocol": "PLAINTEXT"}
    assert "group.instance.id" not in consumer_config(confluent())  # dynamic membership by default
    private = consumer_config(s, **{"group.id": None, "group.instance.id": None})
    assert private["group.id"].startswith("segstream-nogroup-") and "group.instance.id" not in private


def test_producer_is_idempotent_waits_for_all_replicas_and_hashes_keys_like_kafka():
    cfg = producer_config(confluent(security_protocol="SSL", ssl_cafile="/etc/ca.pem"))
    assert (cfg["acks"], cfg["enable.idempotence"], cfg["partitioner"]) == ("all", True, "murmur2_random")
    assert cfg["ssl.ca.location"] == "/etc/ca.pem"


def test_without_confluent_kafka_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import confluent_kafka now raises ImportError
    with pytest.raises(SystemExit) as exc:
        require_confluent()
    assert str(exc.value) == MISSING_EXTRA
    assert "pip install segstream[librdkafka]" in MISSING_EXTRA and "\n" not in MISSING_EXTRA


def test_segstream_run_asking_for_confluent_without_it_exits_with_that_line():
    import subprocess

    code = ("import sys; sys.modules['confluent_kafka'] = None; sys.argv = ['segstream', 'run', "
            "'--kafka-client', 'confluent', '--bootstrap', '127.0.0.1:1', '--metrics-port', '0']; "
            "from stream.cli.main import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == MISSING_EXTRA


def test_the_model_topic_reader_follows_the_configured_client_outside_the_group():
    """The model sync reads on librdkafka with confluent, so its mechanisms go with the global model."""
    pytest.importorskip("confluent_kafka")
    from stream.kafka.clients import make_reader_consumer
    from stream.kafka.confluent import ConfluentConsumer

    confluent(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", global_model=True)  # accepted: the model sync is on librdkafka too
    reader = make_reader_consumer(confluent(group_id="g", group_instance_id="member-1"), "segstream-model")
    try:
        assert isinstance(reader, ConfluentConsumer)
        cfg = reader.config
        assert cfg["client.id"] == "segstream-model" and "group.instance.id" not in cfg
        assert cfg["group.id"] != "g" and cfg["enable.auto.commit"] is False  # never joins nor commits the group
    finally:
        reader.close()


class _Err:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code, self._fatal = code, fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def name(self) -> str:
        return f"E{self._code}"

    def str(self) -> str:
        return "injected"


class _Msg:
    """What librdkafka's consume() hands back, one per record (or per error)."""

    def __init__(self, partition: int, offset: int, value: bytes | None, *, key: bytes | None = None,
                 headers: list | None = None, error: _Err | None = None, topic: str = "events") -> None:
        self._p, self._o, self._v, self._k, self._h, self._e, self._t = partition, offset, value, key, headers, error, topic

    def topic(self): return self._t  # noqa: E704
    def partition(self): return self._p  # noqa: E704
    def offset(self): return self._o  # noqa: E704
    def timestamp(self): return (1, 1000 + self._o)  # noqa: E704
    def key(self): return self._k  # noqa: E704
    def value(self): return self._v  # noqa: E704
    def headers(self): return self._h  # noqa: E704
    def error(self): return self._e  # noqa: E704


def _consumer_over(batches: list[list[_Msg]]):
    ck = pytest.importorskip("confluent_kafka")
    from stream.kafka.confluent import ConfluentConsumer

    class _Rd:
        def consume(self, num_messages: int, timeout: float):
            return batches.pop(0) if batches else []

    c = object.__new__(ConfluentConsumer)  # no librdkafka handle: only poll's conversion is under test
    c._ck, c._consumer, c._positions, c.max_records = ck, _Rd(), {}, 100
    return c


def test_poll_turns_one_consume_call_into_columns_per_partition():
    from stream.kafka import TopicPartition, as_records

    c = _consumer_over([[_Msg(0, 5, b"a", key=b"u1"), _Msg(1, 9, b"b"), _Msg(0, 6, None, headers=[("h", b"x")]),
                         _Msg(1, 10, b"d")]])
    polled = c.poll(timeout_ms=10, max_records=100)
    assert sorted(polled) == [TopicPartition("events", 0), TopicPartition("events", 1)]
    p0 = as_records(TopicPartition("events", 0), polled[TopicPartition("events", 0)])
    assert p0.offsets.tolist() == [5, 6] and p0.values == [b"a", None] and p0.keys == [b"u1", None]
    assert p0.timestamps.tolist() == [1005, 1006] and p0.headers == [[], [("h", b"x")]]
    p1 = as_records(TopicPartition("events", 1), polled[TopicPartition("events", 1)])
    assert p1.partitions.tolist() == [1, 1] and p1.values == [b"b", b"d"]
    assert c.position(TopicPartition("events", 0)) == 7 and c.position(TopicPartition("events", 1)) == 11


def test_poll_skips_error_messages_and_raises_on_a_fatal_one():
    from stream.kafka import KafkaError, TopicPartition

    c = _consumer_over([[_Msg(0, 1, b"a"), _Msg(0, -1, None, error=_Err(-195))], [_Msg(0, 2, b"b")],
                        [_Msg(0, -1, None, error=_Err(-150, fatal=True))]])
    assert [r.values for rs in c.poll(0).values() for r in rs] == [[b"a"]]
    assert list(c.poll(0)) == [TopicPartition("events", 0)]
    with pytest.raises(KafkaError, match="fatal"):
        c.poll(0)
    assert c.poll(0) == {}
