"""TLS for the tests: a throw-away CA and certificates (``openssl`` command line), and a TLS
terminator in front of the embedded broker.

Tansu 0.6.0 cannot serve TLS itself: its ``broker`` command refuses ``--cert`` together with
``--key`` (one clap argument group: "the argument '--cert <CERT>' cannot be used with '--key
<KEY>'"), and the acceptor it would build is never used (``let _acceptor = ...`` in
tansu-broker/src/broker.rs). So the tests put :class:`TLSProxy` in front of a plain Tansu listener
and have Tansu advertise the proxy's address: every connection segstream's clients open (bootstrap
and the advertised broker) is TLS, verified by kafka-python against the CA the test names.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "make_certificates", "TLSProxy"]


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA segstream is told to trust
    server: Path  # server certificate for 127.0.0.1, signed by ``ca``
    server_key: Path
    expired: Path  # the same name, signed by ``ca``, expired yesterday
    expired_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it alone must fail
    client: Path  # client certificate signed by ``ca`` (mutual TLS)
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> Certificates:
    """A CA, a server certificate (SAN IP:127.0.0.1), an expired one, a client one and an unrelated CA."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=segstream test {ca}", cwd=d)
    for name, days, ext in (("server", "2", ["-extfile", "san.cnf"]), ("expired", "-1", ["-extfile", "san.cnf"]),
                            ("client", "2", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={'127.0.0.1' if name != 'client' else 'segstream'}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", days, *ext, cwd=d)
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key", d / "expired.pem", d / "expired.key",
                        d / "other-ca.pem", d / "client.pem", d / "client.key")


class TLSProxy:
    """Accepts TLS on ``127.0.0.1:port`` and relays the plaintext to ``upstream`` (a plain broker).

    ``client_ca`` set: clients must present a certificate signed by it (mutual TLS).
    Threads: one accept loop, two relays per connection; :meth:`stop` closes everything.
    """

    def __init__(self, upstream: tuple[str, int], certfile: Path, keyfile: Path, *, port: int,
                 client_ca: Path | None = None) -> None:
        self.upstream = upstream
        self.port = port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certfile), str(keyfile))
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(str(client_ca))
        self._sock = socket.create_server(("127.0.0.1", port))
        self._stopped = threading.Event()
        self._open: list[socket.socket] = []
        self.connections = 0  # TLS sessions relayed (the test's proof that clients came through TLS)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)

    def start(self) -> TLSProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                raw, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(10)
            tls = self.ctx.wrap_socket(raw, server_side=True)  # a failed handshake ends here
            tls.settimeout(None)
            up = socket.create_connection(self.upstream)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self._lock:
            self._open += [tls, up]
            self.connections += 1
        threading.Thread(target=self._pump, args=(up, tls), daemon=True).start()
        self._pump(tls, up)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped.set()
        self._sock.close()
        with self._lock:
            for s in self._open:
                try:
                    s.close()
                except OSError:
                    pass
            self._open.clear()
