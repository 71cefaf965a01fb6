"""Recorded behaviour logs: the file format, a MovieLens importer and a synthetic generator.

- ``recorded``: read and write logs (msgpack stream or JSON lines)
- ``movielens``: MovieLens ratings as behaviour events
- ``synthetic``: logs with planted user groups and optional drift
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_events": "eventlogs.recorded",
    "read_event_chunks": "eventlogs.recorded",
    "write_events": "eventlogs.recorded",
    "import_movielens": "eventlogs.movielens",
    "iter_movielens_events": "eventlogs.movielens",
    "SyntheticConfig": "eventlogs.synthetic",
    "generate": "eventlogs.synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    # Lazy, so that importing one module of the package does not import all of them.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
