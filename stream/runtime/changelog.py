"""Kafka as the store of record of segstream's state: the state changelog, written and restored.

Changelog partition p holds the state of input partition p (a compacted topic,
``Settings.changelog_name``). Three kinds of record, all keyed:

- key = user id, value ``b"F"`` + one fixed-width row (:func:`row_dtype`): the
  user's ``seq``, segment, last change id (16 bytes), the decay reference ``t0``
  the row is stored against, the behavioural state (decayed sums, last event
  time, recent items, distance) and the user's ring key (``state.user_store.user_keys``:
  a restore need not hash every id). Written for the users a checkpoint interval
  touched (delta writes), not for every user;
- key = user id, value ``b"T"`` + (seq, segment, last change id): the contract
  tail of a user ``--max-users`` evicted (state/contract_tail.py); value null
  (tombstone): the user was erased;
- key ``__model__``, value msgpack (:mod:`stream.runtime.checkpoints`' ``pack``):
  the core of the segment model and what goes with it (:meth:`Pipeline.model_state`:
  centroids, learner, version, the id high-water mark so that no id is born
  twice, the born ids, the dedup window); its large arrays (the ring of recent
  embeddings) as chunk records, key ``__model__/<path>/<i>``, value ``b"M"`` +
  raw rows, only those that changed since the partition's last checkpoint
  (:mod:`stream.runtime.model_record`). Written into every checkpointed
  partition, so a partition carries its model with it wherever it moves;
- key ``__checkpoint__`` (the marker), value msgpack, written **last** by each
  checkpoint, only once everything above is confirmed: ``offset`` (the next
  input offset the state reflects), ``ck`` (a sequence: wall-clock ns,
  increasing per writer), ``void`` (changelog offset ranges to ignore, see
  below), ``stale`` (users queued for re-assignment, in order) and ``out`` (the
  **outbox**: the ``user-segments`` records, segment changes and tombstones, of
  the partition's users that the checkpoint interval produced, as columns: key
  bytes and lengths, value bytes and lengths, -1 for a tombstone).

The confirmed marker is the single commit point of a checkpoint: the outbox is
sent to ``user-segments`` only after it, so a batch whose marker never made it
published nothing, and the output of a batch that did make it is exactly the
outbox. Outputs cannot be re-derived by processing the batch again: another
member's model may decide otherwise, and a second change with the same ``seq``
would break the output contract. The outbox lives in the marker itself (one
record: it cannot be split from its marker, and compaction, which keeps the
last record per key, always keeps the last marker); it holds one checkpoint
interval's outputs of one partition, so the changelog topic's
``max.message.bytes`` must allow for them.

A restore reads a partition from offset 0 to its end (the high-water mark of
the first fetch, never ``end_offsets()``), takes the **last** marker, keeps the
last record per key before it (the embedded broker never compacts: a restore
must be right on an uncompacted log), and seeks the input to the marker's
offset; the model is the last ``__model__`` before the marker with the last record of each of its chunks. The marker's
outbox is re-published (the very same keys and value bytes, so the same
``change_id``s) before any input is processed: the writer may have died
before sending it; when it did send it, these are exact re-sends, which the
contract allows. Records after the
last marker belong to a checkpoint that a crash cut
short; they are ignored, and the next marker lists their range in ``void`` so
that a later restore ignores them too (otherwise they would precede a newer
marker while reflecting input the new owner had not reached); the next checkpoint
also writes each of their users again (:meth:`Changelog._write_again`), so that
compaction cannot leave an ignored record as a user's only one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from state.user_keys import as_encoded_ids
from state.user_store import UserStore
from stream.kafka.clients import Publisher
from stream.kafka.records import Records, pieces
from stream.runtime.checkpoints import pack, unpack
from stream.runtime.model_record import CHUNK_KIND, ModelWriter, join
from stream.runtime.pipeline import Pipeline

__all__ = ["Changelog", "PartitionState", "MARKER_KEY", "row_dtype", "decode_partition"]

log = logging.getLogger(__name__)

MARKER_KEY = b"__checkpoint__"
MODEL_KEY = b"__model__"
FULL, TAIL = b"F", b"T"
TAIL_DTYPE = np.dtype([("seq", "<u4"), ("segment", "<i4"), ("cid", "S16")])


def row_dtype(store: UserStore) -> np.dtype:
    """The fixed-width layout of a full user record (after its kind byte)."""
    spec = store.spec
    return np.dtype([("seq", "<u4"), ("segment", "<i4"), ("cid", "S16"), ("t0", "<f8"), ("last_ts", "<f8"),
                     ("distance", "<f4"), ("item_head", "u1"), ("dense", "<f4", (spec.dense_width,)),
                     ("items", "<i4", (spec.item_history,)), ("item_w", "<f4", (spec.item_history,)),
                     ("key", "<u8")])


ROW_COLUMNS = ("seq", "segment", "last_ts", "distance", "item_head", "dense", "items", "item_w")


def encode_rows(dtype: np.dtype, columns: Mapping[str, np.ndarray], t0: np.ndarray, cid: np.ndarray,
                key: np.ndarray) -> bytes:
    """Full user records (kind byte included, back to back) from store columns, each row stored against its
    own decay reference ``t0`` (the store's ``ref``)."""
    n = len(key)
    out = np.zeros(n, dtype=dtype)
    for name in ROW_COLUMNS:
        out[name] = columns[name]
    out["t0"] = t0
    out["key"] = key
    out["cid"] = np.where(out["seq"] > 0, cid, b"")
    framed = np.empty((n, 1 + dtype.itemsize), dtype=np.uint8)
    framed[:, 0] = FULL[0]
    framed[:, 1:] = out.view(np.uint8).reshape(n, -1)
    return framed.tobytes()


@dataclass
class PartitionState:
    """What a changelog partition restores to: its newest complete checkpoint."""

    partition: int
    offset: int | None  # next input offset the state reflects; None: no checkpoint
    ck: int = 0
    model: dict[str, Any] | None = None
    void: list[list[int]] = field(default_factory=list)
    end: int = 0  # changelog offset where the read stopped
    marker_at: int = -1  # changelog offset of the marker used
    # full rows (columns), and "ids": the users' ids as the changelog keys them (UTF-8 bytes; the store
    # takes them so, and a restore of a million users decodes none)
    users: dict[str, Any] | None = None
    tails: dict[str, tuple[int, int, bytes, int]] = field(default_factory=dict)
    stale: list[str | bytes] = field(default_factory=list)  # users queued for re-assignment, in queue order
    records: int = 0
    outbox: tuple[list[bytes], list[bytes | None]] = ([], [])  # the marker's user-segments records, to re-send
    # users with records after the marker (a checkpoint a crash cut short): written again by the next checkpoint
    redo: list[bytes] = field(default_factory=list)


def _pieces(flat: bytes, lengths: np.ndarray) -> list[bytes | None]:
    """Consecutive pieces of ``flat`` (length ``-1``: None, a tombstone)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    sizes = np.maximum(lengths, 0)
    return pieces(flat, np.cumsum(sizes) - sizes, lengths)


def _outbox(doc: dict[str, Any]) -> tuple[list[bytes], list[bytes | None]]:
    """The outbox a marker carries: user-segments keys and values, in publish order."""
    out = doc.get("out")
    if not out:
        return [], []
    keys = _pieces(out["k"], np.asarray(out["kl"], dtype=np.int64))
    return keys, _pieces(out["v"], np.asarray(out["vl"], dtype=np.int64))  # type: ignore[return-value]


def decode_partition(partition: int, records: Records, end: int, dtype: np.dtype) -> PartitionState:
    """The state a changelog partition's records (offset 0 to ``end``) restore to."""
    keys, values, offsets = records.keys, records.values, records.offsets
    try:
        last = len(keys) - 1 - keys[::-1].index(MARKER_KEY)
    except ValueError:
        return PartitionState(partition, None, end=end, records=len(keys), redo=_user_keys_of(keys))
    doc = unpack(values[last])
    void = [list(map(int, v)) for v in doc.get("void", [])]
    n = last
    if void:
        keep = np.ones(n, dtype=bool)
        for lo, hi in void:
            keep &= ~((offsets[:n] >= lo) & (offsets[:n] < hi))
        idx = np.flatnonzero(keep).tolist()
        latest = dict(zip([keys[i] for i in idx], idx))  # the last record per key wins
    else:
        latest = dict(zip(keys[:n], range(n)))
    latest.pop(MARKER_KEY, None)
    at_model = latest.pop(MODEL_KEY, None)
    model = None
    if at_model is not None:  # the core, and the chunks of its large arrays (each chunk's latest record)
        def take(key: bytes) -> bytes | None:
            i = latest.pop(key, None)
            return None if i is None else values[i]

        model = join(unpack(values[at_model]), take)
    ukeys = list(latest)
    vals = [values[i] for i in latest.values()]
    held = [k for k, v in zip(ukeys, vals) if v]  # tombstones (None): erased users, nothing to restore
    vals = list(filter(None, vals))
    lens = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
    blob = b"".join(vals)
    starts = np.cumsum(lens) - lens
    kinds = np.frombuffer(blob, dtype=np.uint8)[starts] if len(vals) else np.zeros(0, np.uint8)
    full = kinds == FULL[0]
    width = 1 + dtype.itemsize
    if ((lens != width) & full).any():
        raise ValueError(f"changelog partition {partition} holds user rows of another layout than this version's "
                         f"({width} bytes): written by another version or feature configuration")
    if full.all():  # the columns are views into the fetched bytes (kind byte skipped): no copy here
        framed = np.dtype({"names": dtype.names, "formats": [dtype.fields[n][0] for n in dtype.names],
                           "offsets": [1 + dtype.fields[n][1] for n in dtype.names], "itemsize": width})
        rows = np.frombuffer(blob, dtype=framed)
        full_ids = held
    else:
        pick = full.tolist()
        full_ids = [k for k, f in zip(held, pick) if f]
        rows = np.frombuffer(b"".join([v[1:] for v, f in zip(vals, pick) if f]), dtype=dtype)
    tails = {}
    for i in np.flatnonzero(kinds == TAIL[0]).tolist():
        t = np.frombuffer(vals[i][1:], dtype=TAIL_DTYPE)[0]
        tails[held[i].decode("utf-8", "surrogatepass")] = (int(t["seq"]), int(t["segment"]), bytes(t["cid"]), partition)
    users = {"ids": full_ids, **{name: rows[name] for name in dtype.names}}
    return PartitionState(partition, int(doc["offset"]), ck=int(doc["ck"]), model=model, void=void,
                          end=end, marker_at=int(offsets[last]), users=users, tails=tails, records=len(keys),
                          stale=list(doc.get("stale", [])), outbox=_outbox(doc), redo=_user_keys_of(keys[last + 1:]))


def _user_keys_of(keys: list[bytes]) -> list[bytes]:
    """The user keys among ``keys`` (not the marker's, the model's or its chunks'), each once."""
    return [k for k in dict.fromkeys(keys) if k != MARKER_KEY and not k.startswith(MODEL_KEY)]


def _drop_before_tombstones(keys: list[bytes], values: list[bytes | None], erased: set[bytes]) -> None:
    """Drop, in place, the records of the ``erased`` users held before their last tombstone: they were
    never published, and a marker must not keep an erased user's segments (the user's records after the
    tombstone, a return within the same interval, stay)."""
    last = {key: i for i, (key, value) in enumerate(zip(keys, values)) if value is None and key in erased}
    keep = [i for i, key in enumerate(keys) if i >= last.get(key, -1)]
    if len(keep) < len(keys):
        keys[:], values[:] = [keys[i] for i in keep], [values[i] for i in keep]


class Changelog:
    """Delta writes of one member's partitions, and their restore."""

    def __init__(self, topic: str, publisher: Publisher, pipeline: Pipeline,
                 extras: Mapping[str, tuple[Callable[[], Any], Callable[[Any], None]]] | None = None) -> None:
        self.topic = topic
        self.publisher = publisher
        if hasattr(publisher, "track"):
            publisher.track(topic)  # marker offsets, for the local cache (stream/runtime/changelog_cache.py)
        self.pipeline = pipeline
        # state kept outside the pipeline that must survive a restart too, saved in the model record:
        # name -> (save, load); the drift monitor's PSI reference and detector baselines, for one
        self.extras = dict(extras or {})
        self.dtype = row_dtype(pipeline.store)
        self._dirty = np.zeros(0, dtype=bool)  # per store row: changed since the last checkpoint
        self._erased: dict[int, list[str]] = {}  # partition -> users erased since the last checkpoint
        self._void: dict[int, list[list[int]]] = {}  # partition -> changelog ranges a crash left unfinished
        self._ck = 0
        self._stale_ids: dict[int, list[bytes]] = {}  # partition -> queued users, staged for the marker
        # partition -> user-segments records (keys, values) held until the partition's next marker
        self._outbox: dict[int, tuple[list[bytes], list[bytes | None]]] = {}
        self._sealed: tuple[list[bytes], list[bytes | None]] = ([], [])  # in markers, not yet released
        self.models = ModelWriter()
        self.bytes_written = 0
        self.records_written = 0
        self.model_bytes_written = 0  # core and chunk records
        self.model_bytes_full = 0  # what whole model records would have been (core + every chunk)
        self.checkpoints = 0

    # ----- between checkpoints ------------------------------------------------
    def mark(self, rows: np.ndarray, *, size: int = 0) -> None:
        """These store rows changed (events applied, a new segment, a tail carried on); ``size``: rows
        the mask must cover at least."""
        top = max(int(rows.max()) + 1 if len(rows) else 0, size)
        if top > len(self._dirty):
            # doubling stops at the store's capacity: rows past it never hold a user
            grown = np.zeros(max(top, min(max(2 * len(self._dirty), 1024), self.pipeline.store.capacity)), dtype=bool)
            grown[: len(self._dirty)] = self._dirty
            self._dirty = grown
        self._dirty[rows] = True

    def erased(self, user_ids: list[str], partitions: list[int]) -> None:
        for uid, p in zip(user_ids, partitions):
            self._erased.setdefault(p, []).append(uid)

    def hold(self, keys: list[bytes], values: list[bytes | None], partitions: np.ndarray) -> None:
        """Keep user-segments records (in publish order; ``partitions``: the input partition of each record's
        user) for the outbox of their partition's next marker: they are published only once it is
        confirmed (:meth:`release`)."""
        if not keys:
            return
        partitions = np.asarray(partitions)
        tombstones = None in values  # one scan in C; erasures are rare
        for p in np.unique(partitions).tolist():
            idx = np.flatnonzero(partitions == p).tolist()
            k, v = self._outbox.setdefault(int(p), ([], []))
            k.extend(keys[i] for i in idx)
            v.extend(values[i] for i in idx)
            if tombstones:
                erased = {keys[i] for i in idx if values[i] is None}
                if erased:
                    _drop_before_tombstones(k, v, erased)

    def holds(self, partition: int | None = None) -> bool:
        """Whether records wait in an outbox (of ``partition``, or of any partition)."""
        if partition is None:
            return any(k for k, _ in self._outbox.values())
        return bool(self._outbox.get(partition, ([], []))[0])

    def release(self) -> tuple[list[bytes], list[bytes | None]]:
        """The outboxes the last :meth:`seal` put in markers: to publish once the markers are confirmed."""
        out, self._sealed = self._sealed, ([], [])
        return out

    def forget_partition(self, partition: int) -> None:
        """The partition left this member: what was not checkpointed is its next owner's to redo, and
        its held outputs were never official (the next owner makes its own)."""
        self._erased.pop(partition, None)
        self._void.pop(partition, None)
        self._outbox.pop(partition, None)
        self.models.forget(partition)

    # ----- a checkpoint's writes ----------------------------------------------
    def write(self, offsets: dict[int, int]) -> int:
        """:meth:`stage` then :meth:`seal` (the caller confirms in between and after)."""
        n = self.stage(offsets)
        self.publisher.confirm()
        return n + self.seal(offsets)

    def seal(self, offsets: dict[int, int]) -> int:
        """Send each partition's marker, with the partition's outbox in it: what :meth:`stage` sent becomes
        the partition's state, and the outbox its official output. Call only once the staged records are
        confirmed; publish :meth:`release` only once the markers are."""
        for p, offset in sorted(offsets.items()):
            doc: dict[str, Any] = {"v": 1, "offset": int(offset), "ck": self._ck, "void": self._void.get(p, []),
                                   "stale": self._stale_ids.pop(p, [])}
            keys, values = self._outbox.pop(p, ([], []))
            if keys:
                doc["out"] = {"k": b"".join(keys), "kl": np.fromiter(map(len, keys), np.int64, len(keys)),
                              "v": b"".join(v or b"" for v in values),
                              "vl": np.array([-1 if v is None else len(v) for v in values], dtype=np.int64)}
                self._sealed[0].extend(keys)
                self._sealed[1].extend(values)
            marker = pack(doc)
            self.publisher.send_columns(self.topic, p, MARKER_KEY, np.array([len(MARKER_KEY)]), marker,
                                        np.array([len(marker)]))
            self.bytes_written += len(MARKER_KEY) + len(marker)
        self.records_written += len(offsets)
        return len(offsets)

    def stage(self, offsets: dict[int, int]) -> int:
        """Send, per partition (partition -> next input offset the state reflects): evicted users' tails,
        tombstones of erased users, the changed users' rows, and the model (key ``__model__``). They count
        for nothing until :meth:`seal` writes the partition's marker after them, so they may travel with the
        batch's outputs, confirmed together (one round trip). Returns records sent."""
        p_ = self.pipeline
        store = p_.store
        live = store.live_rows()
        self.mark(np.zeros(0, dtype=np.int64), size=len(store.last_ts))
        dirty = live[self._dirty[live]]
        parts = store.partition[dirty]
        new_tails = p_.tails.drain_new()
        core, chunks = self.models.split({**p_.model_state(), **{name: save() for name, (save, _) in self.extras.items()}})
        model = pack(core)
        chunk_bytes = sum(len(k) + 1 + len(v) for k, v, _ in chunks)
        stale = p_.stale_rows()
        stale = stale[store.holds_user(stale)] if len(stale) else stale
        stale_parts = store.partition[stale]
        self._ck = max(time.time_ns(), self._ck + 1)
        self.checkpoints += 1
        sent = 0
        for p, offset in sorted(offsets.items()):
            kparts: list[bytes] = []
            vparts: list[bytes] = []
            klens: list[np.ndarray] = []
            vlens: list[np.ndarray] = []

            def add(ids: list[str] | list[bytes], values: bytes, value_lengths: np.ndarray) -> None:
                # the users' rows come as stored bytes; tails and tombstones are few and come as str
                enc = as_encoded_ids(ids)
                kparts.append(b"".join(enc))
                klens.append(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)))
                vparts.append(values)
                vlens.append(value_lengths)

            tails = [(u, t) for u, t in new_tails if t[3] == p]
            if tails:
                tb = np.zeros((len(tails), 1 + TAIL_DTYPE.itemsize), dtype=np.uint8)
                tb[:, 0] = TAIL[0]
                tb[:, 1:] = np.array([(t[0], t[1], t[2]) for _, t in tails], dtype=TAIL_DTYPE).view(np.uint8).reshape(
                    len(tails), -1)
                add([u for u, _ in tails], tb.tobytes(), np.full(len(tails), tb.shape[1], dtype=np.int64))
            gone = self._erased.pop(p, [])
            if gone:
                add(gone, b"", np.full(len(gone), -1, dtype=np.int64))  # tombstones
            rows = dirty[parts == p]
            if len(rows):
                add(store.user_id_bytes(rows), self._encode(rows), np.full(len(rows), 1 + self.dtype.itemsize, dtype=np.int64))
            self._stale_ids[p] = store.user_id_bytes(stale[stale_parts == p])  # msgpack bin: no str round trip
            key_bytes, value_bytes = b"".join(kparts), b"".join(vparts)
            klen = np.concatenate(klens) if klens else np.zeros(0, dtype=np.int64)
            if len(klen):
                self.publisher.send_columns(self.topic, p, key_bytes, klen, value_bytes, np.concatenate(vlens))
            new = self.models.changed(p, chunks)  # the model's chunks this partition's changelog lacks
            if new:  # a send of their own: the users' rows above keep one value width (the encoder's fast case)
                ck_keys, ck_values = b"".join(k for k, _, _ in new), b"".join(CHUNK_KIND + v for _, v, _ in new)
                self.publisher.send_columns(self.topic, p, ck_keys,
                                            np.fromiter((len(k) for k, _, _ in new), dtype=np.int64, count=len(new)),
                                            ck_values,
                                            np.fromiter((1 + len(v) for _, v, _ in new), dtype=np.int64, count=len(new)))
                sent += len(new)
                self.bytes_written += len(ck_keys) + len(ck_values)
                self.model_bytes_written += len(ck_keys) + len(ck_values)
            self.model_bytes_written += len(MODEL_KEY) + len(model)
            self.model_bytes_full += len(MODEL_KEY) + len(model) + chunk_bytes
            self.publisher.send_columns(self.topic, p, MODEL_KEY, np.array([len(MODEL_KEY)]), model,
                                        np.array([len(model)]))
            sent += len(klen) + 1
            self.bytes_written += len(key_bytes) + len(value_bytes) + len(MODEL_KEY) + len(model)
        self.records_written += sent
        if len(dirty):
            written = dirty[np.isin(parts, list(offsets))]
            self._dirty[written] = False
        return sent

    def _encode(self, rows: np.ndarray) -> bytes:
        """The rows' full records, kind byte included, back to back."""
        store = self.pipeline.store
        return encode_rows(self.dtype, {name: getattr(store, name)[rows] for name in ROW_COLUMNS}, store.ref[rows],
                           self.pipeline.tails.change_ids(rows), store.key[rows])

    def marker_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Changelog offset of each partition's last confirmed marker (the last record this writer sent
        there; only once the markers of :meth:`seal` are confirmed)."""
        last = getattr(self.publisher, "last_offsets", {})
        return {p: last[(self.topic, p)] for p in partitions if (self.topic, p) in last}

    # ----- restore ----------------------------------------------------------------
    def restore(self, states: list[PartitionState]) -> int:
        """Load restored partitions into the pipeline (the model of the newest checkpoint when this member
        holds none yet); returns the users restored. The caller seeks the input to each ``offset``."""
        p_ = self.pipeline
        store = p_.store
        fresh = p_.model is None and len(store) == 0 and p_.events_seen == 0
        with_model = [s for s in states if s.model is not None]
        if fresh and with_model:
            model = max(with_model, key=lambda s: s.ck).model
            p_.load_model_state(model)
            for name, (_, load) in self.extras.items():
                load(model.get(name))
        users = 0
        for s in states:
            self.models.forget(s.partition)  # its changelog holds the previous writer's model: rewrite it whole
            # a cut-short checkpoint's records (all of them when no marker was ever confirmed)
            self._void[s.partition] = s.void + ([[s.marker_at + 1, s.end]] if s.end > s.marker_at + 1 else [])
            p_.tails.evicted.update(s.tails)
        store.reserve(sum(len(s.users["ids"]) for s in states if s.users))  # one allocation for them all
        for s in states:
            u = s.users
            if not u or not u["ids"]:
                continue
            ids = u["ids"]
            # one block a partition: each row keeps its own decay reference (the row's t0 field)
            block: dict[str, Any] = {"ids": ids, "rows": np.zeros(len(ids), np.int64), "t0": float(u["t0"].max()),
                                     "ref": u["t0"], "partition": np.full(len(ids), s.partition, dtype=np.int32)}
            for name in (*ROW_COLUMNS, "key"):
                block[name] = u[name]
            p_.import_users(block, keep_rows=False)
            p_.tails.set_raw_change_ids(store.imported_rows, u["cid"])
            users += len(u["ids"])
        # markers name queued users by their key bytes (older ones by str)
        queued = store.rows_or_missing([x if isinstance(x, bytes) else x.encode("utf-8", "surrogatepass")
                                        for s in states for x in s.stale])
        p_.requeue(queued[queued >= 0])
        for s in states:
            if s.redo:
                self._write_again(s.partition, s.redo)
        return users

    def _write_again(self, partition: int, keys: list[bytes]) -> None:
        """Have the next checkpoint write these users' records again: the row of a user restored, the tail
        of a user evicted, a tombstone for any other (erased, or first seen in the cut-short checkpoint).

        Why: the records a crash left after the last marker are ignored by every restore (the ``void``
        ranges), but compaction keeps only the last record per key, so in time it would drop the user's
        last valid record in favour of an ignored one, and the user would be lost on a later restore.
        Written again after the void range, the user's valid record is the last one."""
        rows = self.pipeline.store.rows_or_missing(keys)
        self.mark(rows[rows >= 0])
        others = [k.decode("utf-8", "surrogatepass") for k, r in zip(keys, rows.tolist()) if r < 0]
        tails = self.pipeline.tails
        tails.write_again([u for u in others if u in tails.evicted])
        self._erased.setdefault(partition, []).extend(u for u in others if u not in tails.evicted)
