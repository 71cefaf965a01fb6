"""A local directory as a cache of the state changelog: a snapshot plus the changelog offset it covers.

With the changelog on and ``SEGSTREAM_CHECKPOINT_DIR`` set, each checkpoint's partition snapshot
(:mod:`stream.runtime.checkpoints`, written once the checkpoint's markers are confirmed) also
names the changelog marker it equals: ``changelog = {"topic", "at": the marker's offset, "ck": its
sequence}``, with what a changelog restore reads besides the rows (each user's last change id and
key, the partition's evicted users' tails). On assignment the restore then reads the changelog
from ``at`` instead of from 0: the snapshot's users, tails and model stand for every record before
``at`` (as records a compacted changelog would hold: :func:`base_records`), the records from ``at``
on are read from Kafka, and the two go through the one decoder (:func:`stream.runtime.changelog.decode_partition`),
so the last marker, the last record per key, the void ranges and the outbox are taken exactly as
without a cache. The cache is used only when the record at ``at`` is that very marker (same ``ck``):
a snapshot of another changelog (the topic recreated, another group) or one whose marker
compaction has removed (compaction keeps every record after it, but not the marker) falls back to
the full read. Nothing is lost either way: the changelog is the store of record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.user_keys import as_encoded_ids
from stream.kafka.records import Records
from stream.runtime.changelog import (MARKER_KEY, MODEL_KEY, ROW_COLUMNS, TAIL, TAIL_DTYPE, Changelog, encode_rows)
from stream.runtime.checkpoints import pack, unpack
from stream.runtime.model_record import CHUNK_KIND, ModelWriter

__all__ = ["cache_extra", "base_records", "covers", "marker_ck", "model_of"]


def cache_extra(changelog: Changelog, partition: int, rows: np.ndarray, marker_at: int | None) -> dict[str, Any]:
    """What a partition snapshot carries besides its users' columns so that it can stand for the changelog
    up to the marker at ``marker_at`` (None: the marker's offset is unknown, the snapshot covers nothing)."""
    p_ = changelog.pipeline
    tails = [(u, t) for u, t in p_.tails.evicted.items() if t[3] == partition]
    out: dict[str, Any] = {
        "cid": p_.tails.change_ids(rows) if len(rows) else np.zeros(0, dtype="S16"),
        "key": p_.store.key[rows],
        "tails": {"ids": [u for u, _ in tails], "seq": np.array([t[0] for _, t in tails], dtype=np.uint32),
                  "segment": np.array([t[1] for _, t in tails], dtype=np.int32),
                  "cid": np.array([t[2] for _, t in tails], dtype="S16")},
    }
    if marker_at is not None:
        out["changelog"] = {"topic": changelog.topic, "at": int(marker_at), "ck": int(changelog._ck)}
    return out


def covers(doc: dict[str, Any], topic: str) -> int | None:
    """The changelog offset a snapshot document stands for (its marker's), None when it covers none of ``topic``."""
    cov = doc.get("changelog")
    return int(cov["at"]) if cov and cov.get("topic") == topic else None


def base_records(changelog: Changelog, doc: dict[str, Any], model: dict[str, Any] | None, partition: int) -> Records:
    """The snapshot as the records a compacted changelog holds before its marker: users' full rows, tails,
    the model (core and chunks). Negative offsets: no void range of a later marker reaches them."""
    users = doc["users"]
    ids = as_encoded_ids(users["ids"])
    # each row's own decay reference; a snapshot without one has all its rows stored against its t0
    ref = users.get("ref")
    if ref is None:
        ref = np.full(len(ids), 0.0 if users["t0"] is None else users["t0"], dtype=np.float64)
    rows = encode_rows(changelog.dtype, {name: users[name] for name in ROW_COLUMNS}, np.asarray(ref, dtype=np.float64),
                       np.asarray(doc["cid"], dtype="S16"), np.asarray(doc["key"], dtype=np.uint64))
    width = 1 + changelog.dtype.itemsize
    values: list[bytes | None] = [rows[i * width:(i + 1) * width] for i in range(len(ids))]
    keys: list[bytes | None] = list(ids)
    tails = doc["tails"]
    trows = np.zeros(len(tails["ids"]), dtype=TAIL_DTYPE)
    for name in ("seq", "segment", "cid"):
        trows[name] = tails[name]
    keys += as_encoded_ids(list(tails["ids"]))
    values += [TAIL + trows[i: i + 1].tobytes() for i in range(len(trows))]
    if model is not None:
        core, chunks = ModelWriter().split(model)
        keys += [k for k, _, _ in chunks] + [MODEL_KEY]
        values += [CHUNK_KIND + v for _, v, _ in chunks] + [pack(core)]
    n = len(keys)
    return Records.single(changelog.topic, partition, np.arange(-n, 0, dtype=np.int64), np.zeros(n, dtype=np.int64),
                          keys, values)


def marker_ck(tail: Records, at: int) -> int | None:
    """The ``ck`` of the marker at offset ``at``, the first record of ``tail`` (None: it is not there)."""
    if not len(tail) or int(tail.offsets[0]) != at or tail.keys[0] != MARKER_KEY or tail.values[0] is None:
        return None
    return int(unpack(tail.values[0])["ck"])


def model_of(global_state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The changelog's model record from a snapshot's shared state (:meth:`Pipeline.global_state` and the
    extras, such as the drift monitor's): :meth:`Pipeline.model_state` takes the same out."""
    if global_state is None:
        return None
    state = dict(global_state)
    state.pop("layout", None)
    state["tails"] = None
    state["stale"] = np.zeros(0, dtype=np.int64)
    state["changed_at"] = np.zeros(0, dtype=np.float64)
    return state
