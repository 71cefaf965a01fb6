"""Output contracts: what recommenders read from segstream's topics.

``user-segments`` (schema 1), key = user id (UTF-8), value = msgpack map::

    schema            1
    user_id           str    the user (ids are always published as strings)
    segment           int    the new segment id
    previous_segment  int | nil
    event_time        float  ts of the event that caused the change (epoch s); for a re-assignment the
                             model caused (segment ended, split or merged; a restored user queued for
                             a segment), the newest ts of the micro-batch that made it
    emitted_at        float  wall clock when published (epoch s)
    model_version     int    segment model version that made the decision
    distance          float  distance to the segment's centroid
    seq               int    per-user change counter (+1 per change)
    change_id         str    deterministic id of this change: a hash of (user, source partition,
                             source offset, new segment); a re-sent change after a crash has the same id

A null value (tombstone) for a user key means the user was erased.

Within a micro-batch a user's records follow its events: a ``delete`` followed by
events of the same user publishes the tombstone, then the new first assignment
(``seq`` 1, ``previous_segment`` nil); events followed by a ``delete`` end on the
tombstone (the pipeline drops a user's events that came before its delete).

Dead letters (``user-events-dlq``): key and value are the original record's,
byte for byte; headers say why (``segstream.dlq.reason``, ``.detail``) and
where it came from (``segstream.source.topic``, ``.partition``, ``.offset``).

    >>> import numpy as np
    >>> from stream.runtime.batch_result import SegmentChanges
    >>> ch = SegmentChanges(["u1"], np.array([3]), np.array([-1]), np.array([0.5], np.float32),
    ...                     np.array([1], np.uint32), np.array([1.7e9]), np.array([0]), 2)
    >>> (key, value), = encode_segment_changes(ch, emitted_at=1.7e9 + 1)
    >>> key, decode_segment_event(value)["previous_segment"]
    (b'u1', None)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from state.events import Rejected

__all__ = ["SEGMENT_SCHEMA_VERSION", "encode_segment_changes", "encode_user_segments", "change_id", "change_ids", "decode_segment_event", "dead_letter_headers",
           "ContractError", "SEGMENT_EVENT_FIELDS"]

SEGMENT_SCHEMA_VERSION = 1

#: field -> accepted Python types after msgpack decoding
SEGMENT_EVENT_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "user_id": (str,),
    "segment": (int,),
    "previous_segment": (int, type(None)),
    "event_time": (float,),
    "emitted_at": (float,),
    "model_version": (int,),
    "distance": (float,),
    "seq": (int,),
}


#: optional fields: checked when present
SEGMENT_EVENT_OPTIONAL: dict[str, tuple[type, ...]] = {"change_id": (str,)}


def change_id(user_id: str, partition: int, offset: int, segment: int) -> str:
    """Deterministic id of one segment change (idempotent outputs): the hash :func:`change_ids` applies.

    >>> change_id("u1", 0, 41, 3) == change_id("u1", 0, 41, 3) != change_id("u1", 0, 42, 3)
    True
    """
    raw = f"{user_id}\x1f{partition}\x1f{offset}\x1f{segment}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def change_ids(changes: Any, partitions: Any, offsets: Any,
               reflected: tuple[Any, Any] | None = None) -> list[str]:
    """The ``change_id`` of every change: the one rule every output path (run loop, replay) applies.

    A change is identified by (user, partition, offset, new segment) of the record that caused it:
    ``partitions``/``offsets`` are the batch's source records in batch order, which
    ``changes.source_index`` points into. A change no record of the batch caused (the model seeded,
    a segment retired, a user held back until the first model) takes the newest position the state
    reflected when it was made, ``reflected`` = (partition, offset), one for all or one per change;
    by default the batch's last record. A replay or a re-run after a crash makes the same ids.

    >>> import numpy as np
    >>> from stream.runtime.batch_result import SegmentChanges
    >>> ch = SegmentChanges(["a", "b"], np.array([1, 2]), np.array([-1, -1]), np.zeros(2, np.float32),
    ...                     np.ones(2, np.uint32), np.zeros(2), np.array([0, -1]), 1)
    >>> change_ids(ch, [3, 3], [40, 41]) == [change_id("a", 3, 40, 1), change_id("b", 3, 41, 2)]
    True
    >>> change_ids(ch, [3, 3], [40, 41], reflected=([3, 5], [40, 99]))[1] == change_id("b", 5, 99, 2)
    True
    """
    src = np.asarray(changes.source_index, dtype=np.int64)
    n = len(src)
    if n == 0:
        return []
    own = src >= 0
    if own.all():
        parts, offs = np.asarray(partitions, dtype=np.int64)[src], np.asarray(offsets, dtype=np.int64)[src]
    else:
        if reflected is None:
            if not len(partitions):
                raise ValueError("changes without a source record need the position the state reflected")
            reflected = (partitions[-1], offsets[-1])
        parts = np.broadcast_to(np.asarray(reflected[0], dtype=np.int64), (n,))
        offs = np.broadcast_to(np.asarray(reflected[1], dtype=np.int64), (n,))
        if own.any():
            at = np.where(own, src, 0)
            parts = np.where(own, np.asarray(partitions, dtype=np.int64)[at], parts)
            offs = np.where(own, np.asarray(offsets, dtype=np.int64)[at], offs)
    return [change_id(uid, p, o, seg) for uid, seg, p, o in zip(changes.user_ids, changes.segments.tolist(),
                                                                parts.tolist(), offs.tolist())]


class ContractError(ValueError):
    """A message does not conform to the published contract."""


def encode_segment_changes(changes: Any, emitted_at: float, ids: list[str] | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) per change, in order (``ids``: each change's :func:`change_id`)."""
    packb = msgpack.Packer().pack  # what msgpack.packb does, without a new Packer per change
    version = int(changes.model_version)
    out = []
    for i, (uid, seg, prev, et, dist, seq) in enumerate(zip(
        changes.user_ids, changes.segments.tolist(), changes.previous.tolist(), changes.event_time.tolist(),
        changes.distances.tolist(), changes.seq.tolist(),
    )):
        value = {
            "schema": SEGMENT_SCHEMA_VERSION,
            "user_id": uid,
            "segment": seg,
            "previous_segment": None if prev < 0 else prev,
            "event_time": et,
            "emitted_at": emitted_at,
            "model_version": version,
            "distance": dist,
            "seq": seq,
        }
        if ids is not None:
            value["change_id"] = ids[i]
        out.append((uid.encode(), packb(value)))
    return out


def encode_user_segments(changes: Any, erased: Sequence[str], emitted_at: float,
                         ids: list[str] | None = None) -> list[tuple[bytes, bytes | None]]:
    """Every ``user-segments`` record of one micro-batch, in publish order: tombstones, then changes.

    This order is each user's event order. The pipeline applies a batch's deletes before its events
    and drops a deleted user's events that came before its last delete, so a change of an erased user
    in the same batch always belongs to the user's new life: it must follow the tombstone, or the
    topic would end on "erased" for a user segstream holds. The run loop and the replay both publish
    through this one rule.

    >>> import numpy as np
    >>> from stream.runtime.batch_result import SegmentChanges
    >>> ch = SegmentChanges(["u1"], np.array([3]), np.array([-1]), np.array([0.5], np.float32),
    ...                     np.array([1], np.uint32), np.array([1.7e9]), np.array([4]), 2)
    >>> [(key, value is None) for key, value in encode_user_segments(ch, ["u1", "u2"], 1.7e9 + 1)]
    [(b'u1', True), (b'u2', True), (b'u1', False)]
    """
    out: list[tuple[bytes, bytes | None]] = [(uid.encode(), None) for uid in erased]
    out += encode_segment_changes(changes, emitted_at, ids)
    return out


def decode_checked(value: bytes, fields: dict[str, tuple[type, ...]], schema: int,
                   optional: dict[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """Decode a msgpack map and check its schema number, required ``fields`` and ``optional`` ones
    (name -> allowed types); raises :class:`ContractError`. Shared by every output contract."""
    try:
        obj = msgpack.unpackb(value, raw=False)
    except Exception as exc:
        raise ContractError(f"not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError("not a map")
    if obj.get("schema") != schema:
        raise ContractError(f"schema {obj.get('schema')!r}, expected {schema}")
    for name, types in fields.items():
        if name not in obj:
            raise ContractError(f"missing field {name}")
        if type(obj[name]) not in types:
            raise ContractError(f"{name}: {type(obj[name]).__name__} not in {[t.__name__ for t in types]}")
    for name, types in (optional or {}).items():
        if name in obj and type(obj[name]) not in types:
            raise ContractError(f"{name}: {type(obj[name]).__name__} not in {[t.__name__ for t in types]}")
    return obj


def decode_segment_event(value: bytes) -> dict[str, Any]:
    """Decode and check one ``user-segments`` value against schema 1 (what a careful client does)."""
    return decode_checked(value, SEGMENT_EVENT_FIELDS, SEGMENT_SCHEMA_VERSION, SEGMENT_EVENT_OPTIONAL)


def dead_letter_headers(rejected: Rejected, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("segstream.dlq.schema", b"1"),
        ("segstream.dlq.reason", rejected.reason.encode()),
        ("segstream.dlq.detail", rejected.detail.encode("utf-8", "replace")[:1000]),
        ("segstream.source.topic", topic.encode()),
        ("segstream.source.partition", str(partition).encode()),
        ("segstream.source.offset", str(offset).encode()),
    ]
