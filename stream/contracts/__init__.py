"""What segstream publishes: the versioned output contracts and their checking decoders.

- ``user_segments``: ``user-segments`` v1 (segment changes, ``change_id``) and dead-letter headers
- ``lineage_profiles``: ``segment-lineage`` v1 and ``segment-profiles`` v1

The input contract lives in :mod:`state.events` (the state layer decodes it).
"""

from __future__ import annotations

from stream.contracts.lineage_profiles import (
    LINEAGE_SCHEMA_VERSION,
    PROFILE_SCHEMA_VERSION,
    decode_lineage,
    decode_profile,
    encode_lineage,
    encode_profiles,
)
from stream.contracts.user_segments import (
    ContractError,
    SEGMENT_SCHEMA_VERSION,
    change_id,
    change_ids,
    dead_letter_headers,
    decode_segment_event,
    encode_segment_changes,
    encode_user_segments,
)

__all__ = [
    "ContractError",
    "LINEAGE_SCHEMA_VERSION",
    "PROFILE_SCHEMA_VERSION",
    "SEGMENT_SCHEMA_VERSION",
    "change_id",
    "change_ids",
    "dead_letter_headers",
    "decode_lineage",
    "decode_profile",
    "decode_segment_event",
    "encode_lineage",
    "encode_profiles",
    "encode_segment_changes",
    "encode_user_segments",
]
