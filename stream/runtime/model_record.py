"""The segment model in the changelog, written incrementally: a small core record plus keyed chunks.

The model state (:meth:`Pipeline.model_state`) is mostly one array, the k-means ring of recent
embeddings (4096 rows); the rest (centres, learner, version, id high-water mark, RNGs) is a few
kilobytes. Writing all of it at every checkpoint into every partition made the model the largest
record of the changelog. Here every array of at least :data:`SPLIT_BYTES` leaves the core: it is cut
into chunks of whole rows (about :data:`CHUNK_BYTES` each), each written as its own keyed record
(key ``__model__/<path>/<i>``, value ``b"M"`` + the rows' raw bytes), and the core (key
``__model__``) keeps a placeholder with the array's shape, dtype and chunking. A checkpoint writes,
per partition, only the chunks whose content changed since that partition's last checkpoint by this
writer (by digest), and the core. A restore takes the last record per key before the marker (the
changelog is not compacted on the embedded broker), so the chunks it reads are exactly the ring as
of that marker: a chunk the writer skipped had the same content as its earlier record.

    >>> import numpy as np
    >>> w = ModelWriter()
    >>> state = {"segmenter": {"recent": np.arange(8192, dtype=np.float32).reshape(1024, 8), "n": 3}}
    >>> core, chunks = w.split(state)
    >>> len(chunks), core["segmenter"]["recent"]["rows"]
    (4, 256)
    >>> len(w.changed(0, chunks)), len(w.changed(0, chunks))    # the second checkpoint: nothing new
    (4, 0)
    >>> state["segmenter"]["recent"][300] = -1.0
    >>> [k.decode() for k, _, _ in w.changed(0, w.split(state)[1])]
    ['__model__/segmenter/recent/1']
    >>> w.split(state)[1] == ModelWriter().split(state)[1]      # what it keeps from the last split is exact
    True
    >>> latest = {key: b"M" + blob for key, blob, _ in chunks}
    >>> out = join(core, latest.pop)
    >>> out["segmenter"]["n"], bool((out["segmenter"]["recent"] == np.arange(8192).reshape(1024, 8)).all())
    (3, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ModelWriter", "join", "CHUNK_KIND", "CHUNK_PREFIX"]

CHUNK_PREFIX = b"__model__/"
CHUNK_KIND = b"M"
SPLIT_BYTES = 16 * 1024  # arrays at least this large go as chunk records
CHUNK_BYTES = 8 * 1024  # a chunk's size: about 50 ring rows at 41 dims; 1024 ring keys
_MARK = "__chunked__"

Chunk = tuple[bytes, bytes, bytes]  # key, raw bytes (no kind byte), digest


def _rows_per_chunk(arr: np.ndarray) -> int:
    row = arr.nbytes // max(len(arr), 1) or 1
    return max(1, CHUNK_BYTES // row)


class ModelWriter:
    """Splits model states and remembers, per changelog partition, which chunk content is on record."""

    def __init__(self) -> None:
        self._written: dict[int, dict[bytes, bytes]] = {}  # partition -> chunk key -> digest on record
        # path -> (the array as last split, its chunks): a checkpoint cuts and hashes only the chunks whose
        # rows changed since (a few ring rows per micro-batch), not the whole ring every time
        self._last: dict[str, tuple[np.ndarray, list[Chunk]]] = {}

    def _chunks(self, where: str, arr: np.ndarray, rows: int, n: int) -> list[Chunk]:
        def cut(i: int) -> Chunk:
            blob = arr[i * rows: (i + 1) * rows].tobytes()
            return CHUNK_PREFIX + f"{where}/{i}".encode(), blob, hashlib.blake2b(blob, digest_size=12).digest()

        last = self._last.get(where)
        if last is None or last[0].shape != arr.shape or last[0].dtype != arr.dtype:
            out = [cut(i) for i in range(n)]
            self._last[where] = (arr.copy(), out)
            return out
        before, out = last[0], list(last[1])
        width = arr.nbytes // max(len(arr), 1)
        # bytes, not values: a NaN is equal to itself here, and -0.0 differs from 0.0 as its bytes do
        moved = (arr.view(np.uint8).reshape(len(arr), width) != before.view(np.uint8).reshape(len(arr), width)).any(1)
        changed = np.flatnonzero(moved)
        for i in np.unique(changed // rows).tolist():
            out[i] = cut(i)
        before[changed] = arr[changed]
        self._last[where] = (before, out)
        return out

    def split(self, state: dict[str, Any]) -> tuple[dict[str, Any], list[Chunk]]:
        """The core (large arrays replaced by placeholders) and every chunk of those arrays."""
        chunks: list[Chunk] = []

        def walk(node: dict[str, Any], path: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, value in node.items():
                where = f"{path}{name}"
                if isinstance(value, dict):
                    out[name] = walk(value, where + "/")
                elif (isinstance(value, np.ndarray) and value.ndim >= 1 and value.nbytes >= SPLIT_BYTES
                      and not value.dtype.hasobject):
                    rows = _rows_per_chunk(value)
                    arr = np.ascontiguousarray(value)
                    n = -(-len(arr) // rows)
                    chunks.extend(self._chunks(where, arr, rows, n))
                    out[name] = {_MARK: True, "shape": list(arr.shape), "dtype": arr.dtype.str, "rows": rows, "n": n}
                else:
                    out[name] = value
            return out

        return walk(state, ""), chunks

    def changed(self, partition: int, chunks: list[Chunk]) -> list[Chunk]:
        """The chunks ``partition``'s changelog does not hold yet (all of them for a partition this writer
        never wrote); they count as written from now on: the caller sends them before the partition's
        next marker or stops (a checkpoint that fails stops the process)."""
        seen = self._written.setdefault(partition, {})
        out = [c for c in chunks if seen.get(c[0]) != c[2]]
        seen.update((k, d) for k, _, d in out)
        return out

    def forget(self, partition: int) -> None:
        """The partition's changelog may hold another writer's model now: write every chunk next time."""
        self._written.pop(partition, None)


def join(core: dict[str, Any], take: Callable[[bytes], bytes | None]) -> dict[str, Any]:
    """The model state from its core and ``take(key)``, the latest chunk record of a key (kind byte
    included; None when absent)."""

    def walk(node: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in node.items():
            where = f"{path}{name}"
            if isinstance(value, dict) and value.get(_MARK):
                parts = []
                for i in range(int(value["n"])):
                    blob = take(CHUNK_PREFIX + f"{where}/{i}".encode())
                    if not blob or blob[:1] != CHUNK_KIND:
                        raise ValueError(f"the changelog's model lacks chunk {i} of {where!r}")
                    parts.append(blob[1:])
                dtype = np.dtype(value["dtype"])
                out[name] = np.frombuffer(b"".join(parts), dtype=dtype).reshape(value["shape"]).copy()
            elif isinstance(value, dict):
                out[name] = walk(value, where + "/")
            else:
                out[name] = value
        return out

    return walk(core, "")
