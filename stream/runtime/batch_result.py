"""What one micro-batch of :class:`~stream.runtime.pipeline.Pipeline` produced: the segment changes to
publish (columnar) and everything the outputs, the changelog and the metrics read from the batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from state.events import Rejected
from state.kmeans import LineageEvent
from state.segments import SegmentModel

__all__ = ["SegmentChanges", "BatchResult"]


@dataclass
class SegmentChanges:
    """Users whose segment changed in one batch (columnar)."""

    user_ids: list[str]
    segments: np.ndarray  # int64
    previous: np.ndarray  # int64, -1 = no previous segment
    distances: np.ndarray  # float32
    seq: np.ndarray  # uint32, per-user change counter after this change
    event_time: np.ndarray  # float64, ts of the event that caused the change (model-caused: the batch's newest)
    source_index: np.ndarray  # int64, batch position of that event (-1: no event of this batch caused it)
    model_version: int
    rows: np.ndarray | None = None  # int64, the users' store rows (None: not known, look the ids up)

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def empty(cls, version: int = 0) -> SegmentChanges:
        z = np.zeros(0, np.int64)
        return cls([], z, z, z.astype(np.float32), z.astype(np.uint32), z.astype(np.float64), z, version)


@dataclass
class BatchResult:
    """One micro-batch's outcome: changes to publish, rejected records, erasures, model news, drift inputs."""

    events: int
    changes: SegmentChanges
    rejected: list[Rejected] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # users deleted: publish tombstones
    erased_sources: list[int] = field(default_factory=list)  # per erased user: batch index of its delete
    touched: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # store rows the events updated
    users_updated: int = 0
    new_users: int = 0
    evicted: int = 0
    new_model: SegmentModel | None = None
    lineage: list[LineageEvent] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)  # segment profiles due this batch
    encode_seconds: float = 0.0
    max_event_time: float = float("nan")
    duplicates: int = 0  # events dropped as repeats of a recent event_id
    # drift metrics: distances to the assigned centroid and embeddings of this batch's updated users
    distances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    embeddings: np.ndarray | None = None
    embedding_keys: np.ndarray | None = None  # user key (state.user_store.user_keys) of each embedding row
    label_agreement: float | None = None  # when a model version was published: see Pipeline.label_agreement
    reassigned: int = 0  # the last ones of ``changes``: users re-assigned after a new model version, not by an event
