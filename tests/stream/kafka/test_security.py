"""Connecting to a secured cluster, for real: ``segstream run`` end to end over mutual TLS and with a
SCRAM-SHA-256 login over TLS, and each way a secured connection goes wrong (CA not trusted, expired
certificate, SASL login refused) stops start-up with one line naming the cause: no traceback,
non-zero exit.

The TLS endpoint is a terminator in front of the embedded broker (``tests/tls_proxy.py``: Tansu 0.6.0
serves no TLS itself); the broker advertises it, so every connection segstream opens is TLS, verified
against a throw-away CA made with ``openssl``. SASL: Tansu's ``--authentication`` offers SCRAM-SHA-256/512
but its memory engine stores no credentials and PLAIN is not built in, so no login can succeed there;
the terminator answers the SCRAM exchange itself (``scram={user: password}``) for the successful login
and a wrong password, and Tansu's own refusal is tested too (see docs/security.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import pack_events, produce, read_topic
from stream.contracts.user_segments import decode_segment_event
from stream.kafka.clients import ensure_topics
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.settings import Settings
from tls_proxy import Certificates, TLSProxy, make_certificates

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line"),
              pytest.mark.skipif(bool(os.environ.get("SEGSTREAM_TEST_BOOTSTRAP")),
                                 reason="runs its own brokers (TLS terminator, --authentication)")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tansu behind two TLS endpoints: ``mtls`` (valid certificate, client certificate required; the one
    advertised) and ``expired`` (an expired certificate, same CA)."""
    mtls = TLSProxy(("127.0.0.1", 0), certs.server, certs.server_key, port=0, client_ca=certs.ca)
    expired = TLSProxy(("127.0.0.1", 0), certs.expired, certs.expired_key, port=0)
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(advertised_port=mtls.port, log_path=str(log)) as b:
        for proxy in (mtls, expired):
            proxy.upstream = ("127.0.0.1", b.port)
            proxy.start()
        try:
            yield {"bootstrap": f"127.0.0.1:{mtls.port}", "expired": f"127.0.0.1:{expired.port}", "proxy": mtls}
        finally:
            mtls.stop()
            expired.stop()


SCRAM_USER, SCRAM_PASSWORD = "segstream", "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def scram_broker(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tansu behind a TLS endpoint that requires a SCRAM-SHA-256 login (SASL_SSL) of ``SCRAM_USER``."""
    proxy = TLSProxy(("127.0.0.1", 0), certs.server, certs.server_key, port=0, scram={SCRAM_USER: SCRAM_PASSWORD})
    log = tmp_path_factory.mktemp("tansu-scram") / "tansu.log"
    with EmbeddedBroker(advertised_port=proxy.port, log_path=str(log)) as b:
        proxy.upstream = ("127.0.0.1", b.port)
        proxy.start()
        try:
            yield {"bootstrap": f"127.0.0.1:{proxy.port}", "proxy": proxy}
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def sasl_broker(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tansu with ``--authentication`` (SASL required), behind a TLS endpoint (SASL_SSL)."""
    proxy = TLSProxy(("127.0.0.1", 0), certs.server, certs.server_key, port=0)
    log = tmp_path_factory.mktemp("tansu-sasl") / "tansu.log"
    with EmbeddedBroker(advertised_port=proxy.port, authentication=True, log_path=str(log)) as b:
        proxy.upstream = ("127.0.0.1", b.port)
        proxy.start()
        try:
            yield f"127.0.0.1:{proxy.port}"
        finally:
            proxy.stop()


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **{f"SEGSTREAM_{k.upper()}": v for k, v in settings.items()}}


def _mtls(certs: Certificates) -> dict[str, str]:
    return {"security_protocol": "SSL", "ssl_cafile": str(certs.ca), "ssl_certfile": str(certs.client),
            "ssl_keyfile": str(certs.client_key)}


def _scram(certs: Certificates, password: str = SCRAM_PASSWORD) -> dict[str, str]:
    return {"security_protocol": "SASL_SSL", "ssl_cafile": str(certs.ca), "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": SCRAM_USER, "sasl_password": password}


@pytest.mark.parametrize("secured", ["mutual-tls", "scram-over-tls"])
def test_segstream_runs_end_to_end_over_a_secured_connection(certs, tls_broker, scram_broker, secured, kafka_client):
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"events-{tag}", "output": f"segments-{tag}", "dlq": f"dlq-{tag}"}
    broker = tls_broker if secured == "mutual-tls" else scram_broker
    security = _mtls(certs) if secured == "mutual-tls" else _scram(certs)
    settings = Settings(bootstrap=broker["bootstrap"], **security)  # type: ignore[arg-type]
    client = settings.kafka_security()
    ensure_topics(settings, {topics["input"]: 1, topics["output"]: 1, topics["dlq"]: 1})
    events = [{"user_id": f"user-{i % 20}", "action": "view", "ts": 1.7e9 + i, "item_id": i % 7,
               "categories": [f"c{i % 3}"]} for i in range(400)]
    produce(broker["bootstrap"], topics["input"], pack_events(events), **client)
    before, logins = broker["proxy"].connections, len(broker["proxy"].logins)
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--idle-exit", "3", "--warmup-users", "10", "--segments", "2"],
        env=_env(bootstrap=broker["bootstrap"], input_topic=topics["input"], output_topic=topics["output"],
                 dlq_topic=topics["dlq"], group_id=f"group-{tag}", metrics_port="0", **security),
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert broker["proxy"].connections > before  # segstream's own clients came through TLS
    if secured == "scram-over-tls":  # and each of them logged in
        made = broker["proxy"].logins[logins:]
        assert made and all(ok and user == SCRAM_USER for user, ok in made)
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["events"] == 400 and summary["stopped_by"] == "idle"
    out = read_topic(broker["bootstrap"], topics["output"], **client)
    assigned = {decode_segment_event(r.value)["user_id"] for r in out if r.value is not None}
    assert assigned == {f"user-{i}" for i in range(20)}


def _start_up_failure(env: dict[str, str]) -> tuple[int, str]:
    tag = uuid.uuid4().hex[:8]
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--idle-exit", "3", "--log-level", "WARNING"],
        env=_env(input_topic=f"events-{tag}", group_id=f"group-{tag}", metrics_port="0", **env),
        capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


# TLS is checked with a handshake of segstream's own before either client connects: one client suffices there
@pytest.mark.parametrize("case, client", [("wrong-ca", "kafka-python"), ("expired-certificate", "kafka-python"),
                                          ("wrong-password", "kafka-python"), ("wrong-password", "confluent"),
                                          ("refused-by-tansu", "kafka-python"), ("refused-by-tansu", "confluent")])
def test_a_refused_secure_connection_stops_start_up_with_one_line(certs, tls_broker, scram_broker, sasl_broker,
                                                                  case, client):
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    if case == "wrong-ca":
        env = {**_mtls(certs), "bootstrap": tls_broker["bootstrap"], "ssl_cafile": str(certs.other_ca)}
        expect = ["not trusted", "certificate", str(certs.other_ca), "SEGSTREAM_SSL_CAFILE"]
    elif case == "expired-certificate":
        env = {**_mtls(certs), "bootstrap": tls_broker["expired"]}
        expect = ["not trusted", "certificate has expired"]
    elif case == "wrong-password":  # the verifier that lets the right password in
        env = {**_scram(certs, password="not-the-password"), "bootstrap": scram_broker["bootstrap"]}
        # the broker's own reason follows when its reply is read before the connection drops (not always, under load)
        expect = ["SASL login as 'segstream' (SCRAM-SHA-256) refused", "SEGSTREAM_SASL_PASSWORD"]
    else:
        env = {"bootstrap": sasl_broker, "security_protocol": "SASL_SSL", "ssl_cafile": str(certs.ca),
               "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "segstream", "sasl_password": "wrong"}
        expect = ["SASL login as 'segstream' (SCRAM-SHA-256) refused", "SEGSTREAM_SASL_PASSWORD"]
    code, err = _start_up_failure({**env, "kafka_client": client})
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]  # one line, kafka-python's retries included
    assert all(e in lines[0] for e in expect), lines[0]
