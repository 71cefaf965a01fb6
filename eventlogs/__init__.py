"""Recorded behaviour logs: the file format, a MovieLens importer and a synthetic generator.

- ``recorded``: read and write logs (msgpack stream or JSON lines)
- ``movielens``: MovieLens ratings as behaviour events
- ``synthetic``: logs with planted user groups and optional drift
"""

from __future__ import annotations

from eventlogs.movielens import import_movielens, iter_movielens_events
from eventlogs.recorded import read_event_chunks, read_events, write_events
from eventlogs.synthetic import SyntheticConfig, generate

__all__ = [
    "SyntheticConfig",
    "generate",
    "import_movielens",
    "iter_movielens_events",
    "read_event_chunks",
    "read_events",
    "write_events",
]
