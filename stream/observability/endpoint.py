"""The consumer's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

One server and one port for all three, so that a Kubernetes pod or a compose
service exposes a single port and the probes see the very process Prometheus
scrapes. Options:

* **basic auth** (``auth=(user, password)``) guards ``/metrics`` only: the
  probes answer without credentials, because kubelet and Docker health checks
  would otherwise need the password in the pod spec or the image, and the
  probes reveal no more than "ok" or a one-line reason;
* **TLS** (``tls=(certfile, keyfile)``) wraps the whole server. The handshake
  runs on the request's own thread (not in ``accept``), so a client that
  connects and never speaks cannot block the others.

``probes`` is anything with ``live()`` and ``ready()`` returning ``(ok, reason)``
(:class:`stream.runtime.health.Health` in ``segstream run``); without it,
``/healthz`` says the process serves and ``/readyz`` says not ready.

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> import urllib.request
    >>> reg = CollectorRegistry(); Counter("demo_events", "d", registry=reg).inc()
    >>> ep = OpsEndpoint(reg).start(0, "127.0.0.1")
    >>> body = urllib.request.urlopen(f"http://127.0.0.1:{ep.port}/metrics").read().decode()
    >>> "demo_events_total 1.0" in body
    True
    >>> ep.stop()
"""

from __future__ import annotations

import base64
import hmac
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["OpsEndpoint", "Probes"]

log = logging.getLogger(__name__)


class Probes(Protocol):
    def live(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...

    def loop_turned_at(self) -> float: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class OpsEndpoint:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one threaded HTTP(S) server."""

    def __init__(self, registry: CollectorRegistry, probes: Probes | None = None, *,
                 auth: tuple[str, str] | None = None, tls: tuple[str, str] | None = None) -> None:
        self.registry = registry
        self.probes = probes
        self._expected = None if auth is None else "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    def start(self, port: int, host: str = "127.0.0.1") -> OpsEndpoint:
        """Bind and serve on a daemon thread; returns self (``port`` is the bound one, useful with 0)."""
        server_cls = _Server
        if ":" in host:  # an IPv6 address such as "::"
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        server = server_cls((host, port), self._handler())
        if self._tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(*self._tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="segstream-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _authorised(self, header: str | None) -> bool:
        if self._expected is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), self._expected.encode())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a client that stalls mid-request (or mid-handshake) frees its thread

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = urlsplit(self.path).path
                if path == "/metrics":
                    if not endpoint._authorised(self.headers.get("Authorization")):
                        self._reply(401, b"credentials required\n", "text/plain; charset=utf-8",
                                    [("WWW-Authenticate", 'Basic realm="segstream"')])
                        return
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(endpoint.registry), content_type)
                elif path in ("/healthz", "/readyz"):
                    ok, reason = endpoint._probe(path)
                    self._reply(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain; charset=utf-8")

            def _reply(self, code: int, body: bytes, content_type: str,
                       headers: list[tuple[str, str]] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers or []:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # a scrape every few seconds is not worth a log line

        return Handler

    def _probe(self, path: str) -> tuple[bool, str]:
        probes = self.probes
        if probes is None:
            return (True, "ok") if path == "/healthz" else (False, "no run loop")
        try:
            return probes.live() if path == "/healthz" else probes.ready()
        except Exception as exc:  # a probe that raises must answer, not drop the connection
            log.warning("%s probe failed: %s", path, exc)
            return False, f"probe failed: {type(exc).__name__}"
