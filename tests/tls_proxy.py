"""TLS and SASL for the tests: a throw-away CA and certificates (``openssl`` command line), and a
TLS terminator in front of the embedded broker that can also require a SCRAM-SHA-256 login.

Tansu 0.6.0 cannot serve TLS itself: its ``broker`` command refuses ``--cert`` together with
``--key`` (one clap argument group: "the argument '--cert <CERT>' cannot be used with '--key
<KEY>'"), and the acceptor it would build is never used (``let _acceptor = ...`` in
tansu-broker/src/broker.rs). So the tests put :class:`TLSProxy` in front of a plain Tansu listener
and have Tansu advertise the proxy's address: every connection segstream's clients open (bootstrap
and the advertised broker) is TLS, verified by kafka-python against the CA the test names.

Tansu's own ``--authentication`` cannot let anyone in with its memory storage (no SCRAM credential
is ever stored, PLAIN is not built in), so :class:`TLSProxy` with ``scram={user: password}`` answers
``SaslHandshake`` and ``SaslAuthenticate`` itself (RFC 5802 server side, the verifier Kafka brokers
run) before relaying anything else: a right password gets through, a wrong one gets Kafka's
``SASL_AUTHENTICATION_FAILED``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
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

    ``client_ca`` set: clients must present a certificate signed by it (mutual TLS). The port is bound
    at construction (``port=0``: any free one), so a broker started next cannot take it; ``upstream``
    may be set until :meth:`start`.
    Threads: one accept loop, two relays per connection; :meth:`stop` closes everything.
    """

    def __init__(self, upstream: tuple[str, int], certfile: Path, keyfile: Path, *, port: int,
                 client_ca: Path | None = None, scram: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.scram = scram  # user -> password: SASL SCRAM-SHA-256 required before anything is relayed
        self.logins: list[tuple[str, bool]] = []  # (user, accepted) per SCRAM attempt
        self.port = port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certfile), str(keyfile))
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(str(client_ca))
        self._sock = socket.create_server(("127.0.0.1", port))  # port 0: the system picks one
        self.port = self._sock.getsockname()[1]
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
        try:
            if self.scram is not None and not _ScramGate(self, tls, up).run():
                tls.close()
                up.close()
                return
        except OSError:
            return
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


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


class _ScramGate:
    """The SASL part of a Kafka connection, server side: ApiVersions is relayed to the broker,
    SaslHandshake and SaslAuthenticate (SCRAM-SHA-256) answered here; the first other request is
    relayed once the login succeeded (and the connection closed when it did not)."""

    API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
    ITERATIONS = 4096

    def __init__(self, proxy: TLSProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.user: str | None = None
        self.state = "handshake"

    def run(self) -> bool:
        from kafka.protocol.sasl import (SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
                                         SaslHandshakeResponse)

        while True:
            frame = _recv_frame(self.client)
            key, version, correlation = struct.unpack(">hhi", frame[:8])
            if key == self.API_VERSIONS:
                self.upstream.sendall(struct.pack(">i", len(frame)) + frame)
                reply = _recv_frame(self.upstream)
                self.client.sendall(struct.pack(">i", len(reply)) + reply)
            elif key == self.SASL_HANDSHAKE:
                req = SaslHandshakeRequest.decode(frame, version=version, header=True)
                ok = req.mechanism == "SCRAM-SHA-256"
                self._reply(SaslHandshakeResponse(error_code=0 if ok else 33, mechanisms=["SCRAM-SHA-256"],
                                                  version=version), correlation)
            elif key == self.SASL_AUTHENTICATE:
                req = SaslAuthenticateRequest.decode(frame, version=version, header=True)
                answer, error = self._step(bytes(req.auth_bytes))
                resp = SaslAuthenticateResponse(error_code=58 if error else 0, error_message=error,
                                                auth_bytes=answer, version=version)
                if version >= 1:
                    resp.session_lifetime_ms = 0
                self._reply(resp, correlation)
                if error:
                    return False
            elif self.state == "done":
                self.upstream.sendall(struct.pack(">i", len(frame)) + frame)
                return True
            else:
                return False  # anything else before the login: refused, as a broker requiring SASL does

    def _reply(self, resp, correlation: int) -> None:
        resp.with_header(correlation_id=correlation)
        self.client.sendall(resp.encode(header=True, framed=True))

    def _step(self, data: bytes) -> tuple[bytes, str | None]:
        """One SCRAM-SHA-256 message of the client: (answer, error message or None)."""
        text = data.decode()
        if self.state == "handshake":  # client-first: "n,,n=user,r=nonce"
            self.client_first_bare = text.split(",", 2)[2]
            fields = dict(kv.split("=", 1) for kv in self.client_first_bare.split(","))
            self.user = fields["n"]
            self.salt = os.urandom(16)
            self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.ITERATIONS}"
            self.state = "final"
            return self.server_first.encode(), None
        # client-final: "c=biws,r=nonce,p=proof"
        without_proof, _, proof = text.rpartition(",p=")
        auth = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        password = (self.proxy.scram or {}).get(self.user or "")
        ok = False
        if password is not None and f"r={self.nonce}" in without_proof.split(","):
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, self.ITERATIONS)
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            stored = hashlib.sha256(client_key).digest()
            signature = hmac.new(stored, auth, hashlib.sha256).digest()
            claimed = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
            ok = hmac.compare_digest(hashlib.sha256(claimed).digest(), stored)
        self.proxy.logins.append((self.user or "", ok))
        if not ok:
            return b"", "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.state = "done"
        return f"v={base64.b64encode(hmac.new(server_key, auth, hashlib.sha256).digest()).decode()}".encode(), None
