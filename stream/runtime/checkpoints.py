"""Local state snapshots tied to source offsets (the "persist" step of a checkpoint).

A checkpoint writes, for every input partition this consumer owns, the users
whose newest event came from that partition together with the source offset
their state reflects, plus one file with the state shared by all partitions
(the segmenter, the row layout, the dedup window). The input topic itself is
the changelog: state after a snapshot is rebuilt by re-consuming from the
snapshot's offset, so nothing is written per event and nothing relies on
broker-side compaction. Layout::

    <dir>/<group>/<topic>/model-<ckpt>.snap
    <dir>/<group>/<topic>/p<partition>-<ckpt>-o<offset>.snap

``<ckpt>`` is ``<wall-clock ns>-<instance>``, so names sort by age. Files are
written to a temporary name, fsynced and renamed: a kill at any point leaves
either the old or the new file. On restore, the newest snapshot whose offset is
**at or before the committed offset** is used (a snapshot newer than the
commit, left by a kill between persist and commit, is never applied). After a
successful commit, older snapshots of the committed partitions are pruned.

Files are msgpack with numpy arrays as an extension type: loading never
unpickles anything.

    >>> import numpy as np
    >>> blob = pack({"a": np.arange(3, dtype=np.int32), "b": [1, "x", None]})
    >>> out = unpack(blob)
    >>> out["a"].dtype.name, out["a"].tolist(), out["b"]
    ('int32', [0, 1, 2], [1, 'x', None])
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

__all__ = ["CheckpointStore", "PartitionSnapshot", "pack", "unpack", "FORMAT"]

log = logging.getLogger(__name__)

FORMAT = 1
_ND = 1  # msgpack extension code of a numpy array
_PART = re.compile(r"^p(\d+)-(\d{20}-[0-9a-f]{8})-o(\d+)\.snap$")
_MODEL = re.compile(r"^model-(\d{20}-[0-9a-f]{8})\.snap$")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays are not checkpointed")
        arr = np.ascontiguousarray(obj)
        return msgpack.ExtType(_ND, msgpack.packb([arr.dtype.str, list(arr.shape), arr.tobytes()]))
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot checkpoint {type(obj).__name__}")


def _ext(code: int, data: bytes) -> Any:
    if code != _ND:
        raise ValueError(f"unknown extension {code} in checkpoint")
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise ValueError("object arrays are refused")
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, ext_hook=_ext, strict_map_key=False)


def _atomic_write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class PartitionSnapshot:
    partition: int
    offset: int  # next source offset: the state reflects every record before it
    ckpt: str
    path: Path

    def load(self) -> dict[str, Any]:
        doc = unpack(self.path.read_bytes())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{self.path}: checkpoint format {doc.get('format')!r}, expected {FORMAT}")
        return doc


class CheckpointStore:
    """Snapshots of one consumer group's state for one input topic, in a local directory."""

    def __init__(self, root: str | os.PathLike[str], group: str, topic: str, *,
                 clock_ns: Callable[[], int] = time.time_ns, instance: str | None = None,
                 orphan_age_s: float = 60.0) -> None:
        self.dir = Path(root) / _safe(group) / _safe(topic)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock_ns = clock_ns
        self.instance = instance or uuid.uuid4().hex[:8]
        self.orphan_age_s = orphan_age_s
        self._last = 0

    def _new_ckpt(self) -> str:
        ns = max(self.clock_ns(), self._last + 1)
        self._last = ns
        return f"{ns:020d}-{self.instance}"

    # ----- writing ---------------------------------------------------------
    def write(self, global_state: dict[str, Any], partitions: dict[int, tuple[int, dict[str, Any]]],
              extra: dict[int, dict[str, Any]] | None = None) -> str:
        """Persist one checkpoint: the shared state, then partition -> (offset, users block); ``extra``:
        more entries of a partition's document (the changelog offset it covers, :mod:`stream.runtime.changelog_cache`)."""
        ckpt = self._new_ckpt()
        _atomic_write(self.dir / f"model-{ckpt}.snap", pack({"format": FORMAT, "ckpt": ckpt, "state": global_state}))
        for p, (offset, users) in sorted(partitions.items()):
            doc = {**(extra or {}).get(p, {}), "format": FORMAT, "ckpt": ckpt, "partition": p, "offset": offset,
                   "model": ckpt, "users": users}
            _atomic_write(self.dir / f"p{p}-{ckpt}-o{offset}.snap", pack(doc))
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return ckpt

    # ----- reading ---------------------------------------------------------
    def snapshots(self, partition: int | None = None) -> list[PartitionSnapshot]:
        out = []
        for entry in os.scandir(self.dir):
            m = _PART.match(entry.name)
            if m and (partition is None or int(m.group(1)) == partition):
                out.append(PartitionSnapshot(int(m.group(1)), int(m.group(3)), m.group(2), Path(entry.path)))
        return sorted(out, key=lambda s: s.ckpt)

    def best(self, partition: int, committed: int | None) -> PartitionSnapshot | None:
        """Newest snapshot of ``partition`` at or before the committed offset (None: nothing committed)."""
        if committed is None:
            return None
        ok = [s for s in self.snapshots(partition) if s.offset <= committed]
        return ok[-1] if ok else None

    def load_global(self, ckpt: str) -> dict[str, Any] | None:
        path = self.dir / f"model-{ckpt}.snap"
        if not path.exists():
            return None
        doc = unpack(path.read_bytes())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: checkpoint format {doc.get('format')!r}, expected {FORMAT}")
        return doc["state"]

    # ----- pruning ---------------------------------------------------------
    def prune(self, committed: dict[int, int]) -> int:
        """Delete snapshots older than the one each partition's committed offset points at."""
        removed = 0
        for p, off in committed.items():
            snaps = self.snapshots(p)
            keep = [s for s in snaps if s.offset <= off]
            if not keep:
                continue
            anchor = keep[-1].ckpt
            for s in snaps:
                if s.ckpt < anchor:
                    s.path.unlink(missing_ok=True)
                    removed += 1
        referenced = {s.ckpt for s in self.snapshots()}
        cutoff = self.clock_ns() - int(self.orphan_age_s * 1e9)
        for entry in os.scandir(self.dir):
            m = _MODEL.match(entry.name)
            if m and m.group(1) not in referenced and (m.group(1).endswith(self.instance) or int(m.group(1)[:20]) < cutoff):
                if m.group(1) < max(referenced, default=""):
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"
