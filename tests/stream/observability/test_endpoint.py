"""The HTTP endpoint's options: basic auth on /metrics (probes stay open), TLS, unknown paths; and the
settings that switch them on, through a real ``segstream run``."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from helpers import SegstreamProcess
from stream.observability.metrics import Metrics
from stream.settings import Settings, SettingsError


class Probes:
    def live(self) -> tuple[bool, str]:
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        return False, "restoring"

    def loop_turned_at(self) -> float:
        return 0.0


def _get(url: str, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_basic_auth_guards_metrics_but_not_the_probes() -> None:
    m = Metrics(CollectorRegistry())
    m.events_consumed.inc(7)
    port = m.serve(0, probes=Probes(), auth=("prom", "s3cret"))
    base = f"http://127.0.0.1:{port}"
    try:
        code, body, headers = _get(f"{base}/metrics")
        assert code == 401 and "segstream_" not in body
        assert headers["WWW-Authenticate"] == 'Basic realm="segstream"'
        assert _get(f"{base}/metrics", ("prom", "wrong"))[0] == 401
        assert _get(f"{base}/metrics", ("other", "s3cret"))[0] == 401
        code, body, _ = _get(f"{base}/metrics", ("prom", "s3cret"))
        assert code == 200 and "segstream_events_consumed_total 7.0" in body
        assert _get(f"{base}/healthz")[:2] == (200, "ok\n")
        assert _get(f"{base}/readyz")[:2] == (503, "restoring\n")
        assert _get(f"{base}/nothing")[0] == 404
    finally:
        m.shutdown()


def test_without_auth_metrics_are_open() -> None:
    m = Metrics(CollectorRegistry())
    port = m.serve(0)
    try:
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # no run loop to ask: the process serves
        assert _get(f"http://127.0.0.1:{port}/readyz")[:2] == (503, "no run loop\n")
    finally:
        m.shutdown()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_serves_every_path_over_https_only(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    m = Metrics(CollectorRegistry())
    port = m.serve(0, probes=Probes(), tls=(cert, key), auth=("prom", "pw"))
    ctx = ssl.create_default_context(cafile=cert)
    try:
        assert _get(f"https://127.0.0.1:{port}/metrics", ("prom", "pw"), ctx)[0] == 200
        assert _get(f"https://127.0.0.1:{port}/metrics", None, ctx)[0] == 401
        assert _get(f"https://127.0.0.1:{port}/healthz", None, ctx)[:2] == (200, "ok\n")
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP gets no answer
            _get(f"http://127.0.0.1:{port}/healthz")
        with pytest.raises(urllib.error.URLError):  # and a client that cannot verify the certificate refuses
            _get(f"https://127.0.0.1:{port}/healthz", None, ssl.create_default_context())
    finally:
        m.shutdown()


def test_auth_and_tls_settings_go_in_pairs() -> None:
    with pytest.raises(SettingsError, match="go together"):
        Settings(metrics_auth_user="prom")
    with pytest.raises(SettingsError, match="go together"):
        Settings(metrics_tls_certfile="/c.pem")
    with pytest.raises(SettingsError):
        Settings(liveness_timeout_s=0)
    s = Settings.from_env({"SEGSTREAM_METRICS_AUTH_USER": "prom", "SEGSTREAM_METRICS_AUTH_PASSWORD": "pw"})
    assert (s.metrics_auth_user, s.metrics_auth_password) == ("prom", "pw")


@pytest.mark.integration
def test_segstream_run_guards_metrics_with_the_password_from_the_environment(broker, topics) -> None:
    broker.create(topics)
    proc = SegstreamProcess(broker.settings(topics), "--metrics-auth-user", "prom",
                            env={"SEGSTREAM_METRICS_AUTH_PASSWORD": "from-env"})
    base = f"http://127.0.0.1:{proc.metrics_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.proc.communicate()[1][-3000:]
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert _get(f"{base}/readyz")[:2] == (200, "ok\n")
        assert _get(f"{base}/metrics")[0] == 401
        code, body, _ = _get(f"{base}/metrics", ("prom", "from-env"))
        assert code == 200 and "segstream_ready 1.0" in body
    finally:
        proc.kill()
