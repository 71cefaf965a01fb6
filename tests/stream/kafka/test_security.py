"""Connecting to a secured cluster, for real: ``segstream run`` end to end over (mutual) TLS, and each
way a secured connection goes wrong (CA not trusted, expired certificate, SASL login refused) stops
start-up with one line naming the cause: no traceback, non-zero exit.

The TLS endpoint is a terminator in front of the embedded broker (``tests/tls_proxy.py``: Tansu 0.6.0
serves no TLS itself); the broker advertises it, so every connection segstream opens is TLS, verified
against a throw-away CA made with ``openssl``. SASL: Tansu's ``--authentication`` offers SCRAM-SHA-256/512
but its memory engine stores no credentials and PLAIN is not built in, so no login can succeed there:
wrong credentials are tested (over TLS), a successful SASL login is not (see docs/security.md).
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
from stream.kafka.embedded_broker import EmbeddedBroker, free_port
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
    port, expired_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(advertised_port=port, log_path=str(log)) as b:
        mtls = TLSProxy(("127.0.0.1", b.port), certs.server, certs.server_key, port=port, client_ca=certs.ca).start()
        expired = TLSProxy(("127.0.0.1", b.port), certs.expired, certs.expired_key, port=expired_port).start()
        try:
            yield {"bootstrap": f"127.0.0.1:{port}", "expired": f"127.0.0.1:{expired_port}", "proxy": mtls}
        finally:
            mtls.stop()
            expired.stop()


@pytest.fixture(scope="module")
def sasl_broker(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tansu with ``--authentication`` (SASL required), behind a TLS endpoint (SASL_SSL)."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu-sasl") / "tansu.log"
    with EmbeddedBroker(advertised_port=port, authentication=True, log_path=str(log)) as b:
        proxy = TLSProxy(("127.0.0.1", b.port), certs.server, certs.server_key, port=port).start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            proxy.stop()


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **{f"SEGSTREAM_{k.upper()}": v for k, v in settings.items()}}


def _mtls(certs: Certificates) -> dict[str, str]:
    return {"security_protocol": "SSL", "ssl_cafile": str(certs.ca), "ssl_certfile": str(certs.client),
            "ssl_keyfile": str(certs.client_key)}


def test_segstream_runs_end_to_end_over_mutual_tls(certs, tls_broker):
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"events-{tag}", "output": f"segments-{tag}", "dlq": f"dlq-{tag}"}
    security = _mtls(certs)
    settings = Settings(bootstrap=tls_broker["bootstrap"], **security)  # type: ignore[arg-type]
    client = settings.kafka_security()
    ensure_topics(settings, {topics["input"]: 1, topics["output"]: 1, topics["dlq"]: 1})
    events = [{"user_id": f"user-{i % 20}", "action": "view", "ts": 1.7e9 + i, "item_id": i % 7,
               "categories": [f"c{i % 3}"]} for i in range(400)]
    produce(tls_broker["bootstrap"], topics["input"], pack_events(events), **client)
    before = tls_broker["proxy"].connections
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--idle-exit", "3", "--warmup-users", "10", "--segments", "2"],
        env=_env(bootstrap=tls_broker["bootstrap"], input_topic=topics["input"], output_topic=topics["output"],
                 dlq_topic=topics["dlq"], group_id=f"group-{tag}", metrics_port="0", **security),
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tls_broker["proxy"].connections > before  # segstream's own clients came through TLS
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["events"] == 400 and summary["stopped_by"] == "idle"
    out = read_topic(tls_broker["bootstrap"], topics["output"], **client)
    assigned = {decode_segment_event(r.value)["user_id"] for r in out if r.value is not None}
    assert assigned == {f"user-{i}" for i in range(20)}


def _start_up_failure(env: dict[str, str]) -> tuple[int, str]:
    tag = uuid.uuid4().hex[:8]
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--idle-exit", "3", "--log-level", "WARNING"],
        env=_env(input_topic=f"events-{tag}", group_id=f"group-{tag}", metrics_port="0", **env),
        capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", ["wrong-ca", "expired-certificate", "wrong-credentials"])
def test_a_refused_secure_connection_stops_start_up_with_one_line(certs, tls_broker, sasl_broker, case):
    if case == "wrong-ca":
        env = {**_mtls(certs), "bootstrap": tls_broker["bootstrap"], "ssl_cafile": str(certs.other_ca)}
        expect = ["not trusted", "certificate", str(certs.other_ca), "SEGSTREAM_SSL_CAFILE"]
    elif case == "expired-certificate":
        env = {**_mtls(certs), "bootstrap": tls_broker["expired"]}
        expect = ["not trusted", "certificate has expired"]
    else:
        env = {"bootstrap": sasl_broker, "security_protocol": "SASL_SSL", "ssl_cafile": str(certs.ca),
               "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "segstream", "sasl_password": "wrong"}
        expect = ["SASL login as 'segstream' (SCRAM-SHA-256) refused", "SEGSTREAM_SASL_PASSWORD"]
    code, err = _start_up_failure(env)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]  # one line, kafka-python's retries included
    assert all(e in lines[0] for e in expect), lines[0]
