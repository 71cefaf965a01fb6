"""The start-up TLS check without a broker: a handshake with a TLS endpoint names why the broker's
certificate is not trusted (wrong CA, expired), says nothing when it is, and nothing when no server
is reachable (that is not a TLS matter: the wait for the broker goes on)."""

from __future__ import annotations

import shutil

import pytest

from stream.kafka.clients import tls_problem
from stream.kafka.embedded_broker import free_port
from stream.settings import Settings
from tls_proxy import TLSProxy, make_certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")


def test_tls_problem_names_the_cause(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    good = TLSProxy(("127.0.0.1", free_port()), certs.server, certs.server_key, port=0).start()
    expired = TLSProxy(("127.0.0.1", free_port()), certs.expired, certs.expired_key, port=0).start()
    try:
        def probe(port: int, ca: str) -> str | None:
            return tls_problem(Settings(bootstrap=f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=ca))

        assert probe(good.port, str(certs.ca)) is None
        wrong = probe(good.port, str(certs.other_ca))
        assert wrong is not None and "is not trusted" in wrong and str(certs.other_ca) in wrong
        old = probe(expired.port, str(certs.ca))
        assert old is not None and "certificate has expired" in old
        assert probe(free_port(), str(certs.ca)) is None  # nothing listening: not a TLS matter
        missing = probe(good.port, str(tmp_path / "no-such-ca.pem"))
        assert missing is not None and missing.startswith("TLS settings unusable")
    finally:
        good.stop()
        expired.stop()
