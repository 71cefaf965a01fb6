"""What segstream publishes: the versioned output contracts and their checking decoders.

- ``user_segments``: ``user-segments`` v1 (segment changes, ``change_id``) and dead-letter headers
- ``lineage_profiles``: ``segment-lineage`` v1 and ``segment-profiles`` v1

The input contract lives in :mod:`state.events` (the state layer decodes it).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SEGMENT_SCHEMA_VERSION": "stream.contracts.user_segments",
    "encode_segment_changes": "stream.contracts.user_segments",
    "encode_user_segments": "stream.contracts.user_segments",
    "decode_segment_event": "stream.contracts.user_segments",
    "change_id": "stream.contracts.user_segments",
    "change_ids": "stream.contracts.user_segments",
    "dead_letter_headers": "stream.contracts.user_segments",
    "ContractError": "stream.contracts.user_segments",
    "LINEAGE_SCHEMA_VERSION": "stream.contracts.lineage_profiles",
    "PROFILE_SCHEMA_VERSION": "stream.contracts.lineage_profiles",
    "encode_lineage": "stream.contracts.lineage_profiles",
    "decode_lineage": "stream.contracts.lineage_profiles",
    "encode_profiles": "stream.contracts.lineage_profiles",
    "decode_profile": "stream.contracts.lineage_profiles",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    # Lazy, so that importing one module of the package does not import all of them.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
