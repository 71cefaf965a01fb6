"""Recorded event logs: files of input-contract events, in event order.

Two encodings, chosen by file name: ``*.jsonl`` (one JSON object per line) or
anything else as a msgpack stream (maps back to back, the same bytes a
producer puts in a Kafka record). Reading is streaming and chunked so that a
log of any size replays in bounded memory.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.msgpack")
    >>> write_events(path, [{"user_id": 1, "action": "view", "ts": 1.0}] * 3)
    3
    >>> [len(c) for c in read_event_chunks(path, 2)]
    [2, 1]
    >>> next(read_events(path))["action"]
    'view'
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

__all__ = ["read_events", "read_event_chunks", "read_record_values", "write_events", "is_jsonl"]


def is_jsonl(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith((".jsonl", ".json"))


def read_events(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Every event of the log, decoded (maps; malformed entries are yielded as they are)."""
    if is_jsonl(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    yield json.loads(line)
        return
    with open(path, "rb") as fh:
        unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False, max_buffer_size=64 << 20)
        yield from unpacker


def read_event_chunks(path: str | os.PathLike[str], size: int) -> Iterator[list[Any]]:
    """The log in lists of ``size`` events (the last one shorter), cut in C by ``islice``."""
    events = read_events(path)
    while chunk := list(itertools.islice(events, size)):
        yield chunk


def read_record_values(path: str | os.PathLike[str]) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) Kafka record bytes for each event: key = user id as UTF-8 when the event has one."""
    packb = msgpack.packb
    for ev in read_events(path):
        key = None
        if isinstance(ev, dict) and isinstance(ev.get("user_id"), (str, int)) and not isinstance(ev.get("user_id"), bool):
            key = str(ev["user_id"]).encode()
        yield key, packb(ev)


def write_events(path: str | os.PathLike[str], events: Iterable[Any]) -> int:
    """Write a log atomically; returns the number of events."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    n = 0
    if is_jsonl(path):
        with open(tmp, "w", encoding="utf-8") as fh:
            for ev in events:
                fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
                n += 1
    else:
        packer = msgpack.Packer()
        with open(tmp, "wb") as fh:
            for ev in events:
                fh.write(packer.pack(ev))
                n += 1
    os.replace(tmp, path)
    return n
