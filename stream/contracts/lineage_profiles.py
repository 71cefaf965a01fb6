"""Contracts of the segment-lineage and segment-profiles topics (msgpack, versioned).

``segment-lineage`` (schema 1), key = segment id (decimal UTF-8), value = msgpack map::

    schema         1
    kind           str    born | retired | merged | split
    segments       [int]  the ids this record is about (born/split: new ids; retired/merged: ids that end)
    parents        [int]  split: the segment it came from; merged: the segment that absorbed it; else []
    model_version  int    model version that made the change
    event_time     float  event time of the change (epoch s)
    detail         str    human-readable reason

Every id that appears in ``user-segments`` was first announced by ``born`` or
``split``; an id that stops appearing was announced by ``retired`` or ``merged``.
Ids are never reused.

``segment-profiles`` (schema 2), key = segment id, value = msgpack map::

    schema          2
    segment         int
    model_version   int                   the model version the profile describes (the one that made it)
    event_time      float                 event time of the profile
    size            int                   users currently in the segment
    mean_distance   float                 members' mean distance to the centroid (embedding units)
    sampled         int                   members the mixes below were computed on
    top_categories  [[str, float]]        category column, mean share among members
    top_items       [[str | int, float]]  item id as the input wrote it, summed decayed weight
    actions         {str: float}          mean action mix
    centroid        {"norm": float, "top_dims": [[int, float]]}

Schema 2 (from 1): ``top_items`` name items by the input's own ids (schema 1
gave crc32 tokens); ``mean_distance`` is new; ``model_version`` is the version
whose segments were profiled (schema 1 could name the version before it).

    >>> from state.kmeans import LineageEvent
    >>> (k, v), = encode_lineage([LineageEvent("split", (9,), 3, 1.7e9, parents=(2,))])
    >>> k, decode_lineage(v)["parents"]
    (b'9', [2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from stream.contracts.user_segments import ContractError, decode_checked

__all__ = ["LINEAGE_SCHEMA_VERSION", "PROFILE_SCHEMA_VERSION", "encode_lineage", "decode_lineage",
           "encode_profiles", "decode_profile", "LINEAGE_KINDS"]

LINEAGE_SCHEMA_VERSION = 1
PROFILE_SCHEMA_VERSION = 2
LINEAGE_KINDS = ("born", "retired", "merged", "split")

_LINEAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,), "kind": (str,), "segments": (list,), "parents": (list,), "model_version": (int,),
    "event_time": (float,), "detail": (str,),
}
_PROFILE_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,), "segment": (int,), "model_version": (int,), "event_time": (float,), "size": (int,),
    "mean_distance": (float,), "sampled": (int,), "top_categories": (list,), "top_items": (list,), "actions": (dict,), "centroid": (dict,),
}


def encode_lineage(events: Sequence[Any]) -> list[tuple[bytes, bytes]]:
    """The records of the events to publish (an event with ``announce`` false is published by another
    instance: the leader of a global model)."""
    out = []
    for ev in events:
        if not getattr(ev, "announce", True):
            continue
        value = msgpack.packb({
            "schema": LINEAGE_SCHEMA_VERSION, "kind": ev.kind, "segments": [int(s) for s in ev.segments],
            "parents": [int(s) for s in ev.parents], "model_version": int(ev.model_version),
            "event_time": float(ev.event_time), "detail": ev.detail,
        })
        out.append((str(int(ev.segments[0])).encode(), value))
    return out


def encode_profiles(profiles: Sequence[dict[str, Any]], model_version: int | None = None,
                    event_time: float | None = None) -> list[tuple[bytes, bytes]]:
    """Profiles as records; each carries the model version and event time it was made with
    (``model_version``/``event_time``: for profiles that do not)."""
    out = []
    for p in profiles:
        version = p.get("model_version", model_version)
        when = p.get("event_time", event_time)
        if version is None or when is None:
            raise ValueError("a profile needs the model version and event time it describes")
        value = msgpack.packb({"schema": PROFILE_SCHEMA_VERSION, "segment": int(p["segment"]),
                               "model_version": int(version), "event_time": float(when),
                               **{k: p[k] for k in ("size", "mean_distance", "sampled", "top_categories",
                                                    "top_items", "actions", "centroid")}})
        out.append((str(int(p["segment"])).encode(), value))
    return out


def decode_lineage(value: bytes) -> dict[str, Any]:
    obj = decode_checked(value, _LINEAGE_FIELDS, LINEAGE_SCHEMA_VERSION)
    if obj["kind"] not in LINEAGE_KINDS:
        raise ContractError(f"kind {obj['kind']!r}")
    return obj


def decode_profile(value: bytes) -> dict[str, Any]:
    return decode_checked(value, _PROFILE_FIELDS, PROFILE_SCHEMA_VERSION)
