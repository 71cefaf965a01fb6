"""Event decoding in a second process, overlapped with the pipeline (``SEGSTREAM_DECODE_PROCESS``).

msgpack unpacking and the column checks of :class:`~state.events.EventDecoder`
are about a third of ``segstream run``'s loop (py-spy), all of it holding the
GIL. With a decode process the runner hands the *next* micro-batch's record
values to a child while it processes the current one, and takes the columns
back when it gets to that batch (:meth:`StreamRunner.run
<stream.runtime.runner.StreamRunner.run>`). At most one batch is in the child at a time.

The child runs the same decoder on the same bytes. The wall-clock bound of
the far-future check is read in the parent when the batch is handed over, so
the result equals in-process decoding (``tests/stream/runtime/test_decode_worker.py``
compares the two on fuzzed input). If the child dies or answers out of turn,
the runner decodes in-process from then on and logs why; nothing is lost,
because a batch is only ever *processed* in the parent.

Frames on the child's stdin/stdout are an 8-byte little-endian length and a
pickle (the child is our own interpreter, started with ``-m``): the record
values as a list one way, the ``(EventBatch, rejected)`` pair back.

    >>> from state.features import FeatureSpec
    >>> from state.events import EventDecoder
    >>> import msgpack
    >>> worker = DecodeWorker(EventDecoder(FeatureSpec()))
    >>> worker.submit([msgpack.packb({"user_id": "u1", "action": "view", "ts": 1.7e9}), b"\\xc1"])
    >>> batch, rejected = worker.result()
    >>> batch.user_ids, [(r.index, r.reason) for r in rejected]
    (['u1'], [(1, 'undecodable')])
    >>> worker.close()
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from state.events import EventBatch, EventDecoder, Rejected, set_gc_threshold

__all__ = ["DecodeAhead", "DecodeWorker", "DecodeWorkerError", "available_cpus"]

log = logging.getLogger(__name__)

_HEAD = 8


class DecodeWorkerError(RuntimeError):
    """The decode process is gone or out of step; decode in-process instead."""


def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(_HEAD, "little"))
    stream.write(data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEAD)
    if len(head) < _HEAD:
        return None  # the other side closed the pipe
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class DecodeWorker:
    """A child process that decodes one batch of record values at a time for ``decoder``'s contract."""

    def __init__(self, decoder: EventDecoder, *, gc_threshold: int = 0) -> None:
        self.decoder = decoder
        self._busy = False
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_root(), os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "stream.runtime.decode_worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to, self._from = self._proc.stdin, self._proc.stdout
        self._call(_write, self._to, {"spec": decoder.spec.to_dict(), "max_event_bytes": decoder.max_event_bytes,
                                      "min_ts": decoder.min_ts, "max_clock_skew_s": decoder.max_clock_skew_s,
                                      "gc_threshold": gc_threshold})

    @property
    def busy(self) -> bool:
        """Whether a batch was submitted and its result not yet taken."""
        return self._busy

    def submit(self, values: Sequence[bytes | None]) -> None:
        """Start decoding ``values`` (the far-future bound is read from the decoder's clock now)."""
        if self._busy:
            raise DecodeWorkerError("a batch is already in the decode process")
        self._call(_write, self._to, (float(self.decoder.now()), list(values)))
        self._busy = True

    def result(self) -> tuple[EventBatch, list[Rejected]]:
        """The submitted batch, decoded (blocks until the child answers)."""
        if not self._busy:
            raise DecodeWorkerError("no batch in the decode process")
        self._busy = False
        got = self._call(_read, self._from)
        if got is None:
            raise DecodeWorkerError(f"the decode process ended (exit code {self._proc.poll()})")
        return got

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            self._busy = False
            raise DecodeWorkerError(f"decode process pipe: {type(exc).__name__}: {exc}") from exc

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child (a batch still in it is read and dropped, so the child never writes to a closed pipe)."""
        if self._busy:
            try:
                self.result()
            except DecodeWorkerError:
                pass
        for stream in (self._to, self._from):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class DecodeAhead:
    """How the consumer loop uses a :class:`DecodeWorker`: the batch fetched ahead is decoded in the
    child while the current one is processed.

    One rule keeps the pipes from filling both ways: at most one batch is in the child, and its
    result is taken before the next batch goes in (:meth:`exchange` does both, in that order). Any
    failure switches decoding ahead off for good: :attr:`active` turns False, a warning is logged
    and ``on_off`` runs (the runner sets a gauge to 0). The caller then decodes in-process. Nothing
    is lost, because the caller keeps every record and only ever processes batches itself.
    """

    def __init__(self, worker: DecodeWorker, on_off: Callable[[], None] | None = None) -> None:
        self.worker: DecodeWorker | None = worker
        self._on_off = on_off

    @property
    def active(self) -> bool:
        return self.worker is not None

    def exchange(self, values: Sequence[bytes | None] | None) -> tuple[EventBatch, list[Rejected]] | None:
        """The columns of the batch handed over by the previous call (None: there was none, or the
        child failed), then ``values`` handed over for the next call (None: nothing fetched ahead)."""
        worker = self.worker
        if worker is None:
            return None
        decoded = None
        try:
            if worker.busy:
                decoded = worker.result()
            if values is not None:
                worker.submit(values)
        except DecodeWorkerError as exc:
            self._switch_off(exc)
        return decoded

    def discard(self) -> None:
        """Drop the batch in the child (a rebalance voided some of its records: the caller decodes the rest)."""
        if self.worker is not None and self.worker.busy:
            try:
                self.worker.result()
            except DecodeWorkerError as exc:
                self._switch_off(exc)

    def close(self) -> None:
        """Stop the child at shutdown (a batch still inside is read and dropped)."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def _switch_off(self, exc: Exception) -> None:
        log.warning("decode process failed (%s): decoding in-process from now on", exc)
        self.close()
        if self._on_off is not None:
            self._on_off()


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> float:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 ``cpu.max`` or
    v1 ``cpu.cfs_quota_us``), so that a container limited to one CPU on a larger host reads 1.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "cpu.max").write_text("150000 100000")
    >>> available_cpus(str(d)) == min(1.5, len(os.sched_getaffinity(0)))
    True
    """
    cpus = float(len(os.sched_getaffinity(0)))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup_root, quota_file)) as fh:
                parts = fh.read().split()
            if period_file is not None:
                with open(os.path.join(cgroup_root, period_file)) as fh:
                    parts.append(fh.read().strip())
        except OSError:
            continue
        if len(parts) >= 2 and parts[0] not in ("max", "-1"):
            cpus = min(cpus, int(parts[0]) / int(parts[1]))
    return cpus


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _serve(inp: IO[bytes], out: IO[bytes]) -> int:
    from state.features import FeatureSpec

    init = _read(inp)
    if init is None:
        return 0
    set_gc_threshold(init["gc_threshold"])
    clock = [0.0]
    decoder = EventDecoder(FeatureSpec.from_dict(init["spec"]), max_event_bytes=init["max_event_bytes"],
                           min_ts=init["min_ts"], max_clock_skew_s=init["max_clock_skew_s"], now=lambda: clock[0])
    try:
        while (msg := _read(inp)) is not None:
            clock[0], values = msg
            _write(out, decoder.decode_records(values))
    except BrokenPipeError:  # the consumer went away without reading: nothing to hand back
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve(sys.stdin.buffer, sys.stdout.buffer))
