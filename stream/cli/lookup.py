"""``segstream lookup USER_ID [--follow]``: a user's current segment, as a recommender would read it.

Reads the output topic with :class:`stream.client.SegmentTable` (to its end,
no consumer group) and prints the user's :class:`stream.client.SegmentInfo`
as one JSON line, or says on stderr that the topic holds no segment for the
user and exits 1. With ``--follow`` it then keeps reading and prints a line
each time the user's segment changes (``"segment": null, "erased": true`` when
the user is erased) until SIGINT/SIGTERM. With ``SEGSTREAM_PSEUDONYMISE_KEY``
set, USER_ID is pseudonymised first, as segstream does before publishing.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any

from stream.client import SegmentInfo, SegmentTable
from stream.kafka.clients import wait_for_broker
from stream.settings import Settings

__all__ = ["run_lookup"]


def _line(info: SegmentInfo | None, user_id: str, topic: str) -> str:
    view: dict[str, Any] = info.to_dict() if info is not None else {"user_id": user_id, "segment": None, "erased": True}
    view["topic"] = topic
    return json.dumps(view)


def run_lookup(settings: Settings, user_id: str, *, follow: bool = False, timeout_s: float = 60.0,
               stop: threading.Event | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Print the user's segment (exit status 0) or why there is none (1); with ``follow``, keep printing changes."""
    out = out or sys.stdout
    err = err or sys.stderr
    key = user_id
    if settings.pseudonymise_key:
        from stream.runtime.pseudonym import Pseudonymiser

        key = Pseudonymiser(settings.pseudonymise_key).pseudonym(user_id)
    wait_for_broker(settings, timeout_s)
    table = SegmentTable(settings, bootstrap_timeout_s=timeout_s)
    try:
        info = table.get(key)
        if info is not None:
            print(_line(info, key, table.topic), file=out, flush=True)
        else:
            print(f"segstream: user {user_id!r} has no segment in topic {table.topic!r} "
                  f"({len(table):,} users there)" + ("; waiting for one" if follow else ""), file=err, flush=True)
        if not follow:
            return 0 if info is not None else 1

        def on_change(user: str, new: SegmentInfo | None) -> None:
            if user == key:
                print(_line(new, key, table.topic), file=out, flush=True)

        table.follow(stop or threading.Event(), on_change)
        return 0
    finally:
        table.close()
