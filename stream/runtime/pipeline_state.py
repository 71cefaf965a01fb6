"""What a :class:`~stream.runtime.pipeline.Pipeline` saves and loads at checkpoints, restores and
rebalances: users imported from a snapshot or the changelog and certified against the current
model, a partition's users dropped, and the state shared by all partitions (segmenter, row layout,
re-assignment queue, dedup window, dwell clocks, label bounds, random generators, contract tails).

A mixin: :class:`~stream.runtime.pipeline.Pipeline` holds the attributes these methods use; the
processing itself (events to segment changes) stays in :mod:`stream.runtime.pipeline`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from state.row_queue import RowQueue
from state.segments import assign_bounds

__all__ = ["PipelineState"]


class PipelineState:
    """Checkpoint, restore and rebalance methods of :class:`~stream.runtime.pipeline.Pipeline`."""

    store: Any
    segmenter: Any
    tails: Any
    dedup: Any
    events_seen: int
    hysteresis: float
    _labels: Any
    _stale: Any
    _segment_users: np.ndarray
    _changed_at: np.ndarray
    _since_profile: int
    _profile_rng: np.random.Generator
    _sample_rng: np.random.Generator

    def recount(self) -> None:
        """Recompute users per segment from the store (after users were restored or dropped)."""
        live = self.store.live_rows()
        segs = self.store.segment[live].astype(np.int64)
        segs = segs[segs >= 0]
        self._segment_users = np.bincount(segs, minlength=len(self._segment_users)) if len(segs) else \
            np.zeros(len(self._segment_users), dtype=np.int64)

    def import_users(self, block: dict[str, Any], *, keep_rows: bool) -> int:
        """Load one partition snapshot's users (replacing any held copy); returns how many."""
        for uid in self.store.import_rows(block, keep_rows=keep_rows):
            self.segmenter.forget(uid)
        if not keep_rows:  # rows handed out anew: what the label bounds say of them is about someone else
            self._labels.bounds.forget(self.store.imported_rows)  # no lookup per user: a restore brings millions
        return len(block["ids"])

    def finish_restore(self, layout: Any | None = None) -> None:
        """After snapshots were imported: the row layout they were written with, segment counts, and
        restored users without a segment queued for assignment."""
        if layout is not None:
            self.store.set_layout(layout)
        self.recount()
        if self._labels.model is not self.segmenter.model:  # bounds not in the checkpoint: measured below
            self._labels.restart(self.segmenter.model)
        self._certify_restored()
        self.requeue_unassigned()

    def _certify_restored(self, chunk: int = 65536) -> int:
        """Restored users whose label bounds are unknown (imported at new rows, or from the changelog, which
        keeps no bounds: those of users a checkpoint did not touch move with every version) are embedded
        once and measured against the current model: exact bounds where their label is what the model gives
        them with hysteresis, queued for re-assignment where it is not. Returns how many were queued."""
        model = self.segmenter.model
        if model is None:
            return 0
        rows = self.store.live_rows()
        rows = rows[self.store.segment[rows] >= 0]
        rows = rows[~self._labels.bounds.known(rows)]
        queued: list[np.ndarray] = []
        for i in range(0, len(rows), chunk):
            r = rows[i: i + chunk]
            held = self.store.segment[r].astype(np.int64)
            seg, dist, other = assign_bounds(model, self._embed(r), held, self.hysteresis)
            same = seg == held
            self._labels.bounds.set_exact(r[same], dist[same], other[same], model)
            self.store.distance[r[same]] = dist[same]
            queued.append(r[~same])
        stale = np.concatenate(queued) if queued else np.zeros(0, dtype=np.int64)
        if len(stale):
            self._stale.add(stale)
        return len(stale)

    def drop_partition(self, partition: int) -> int:
        """Forget the users of a partition this consumer no longer owns; returns how many."""
        rows = self.store.rows_of_partition(partition)
        self.tails.clear_rows(rows)
        self.tails.drop_partition(partition)
        for uid in self.store.drop_rows(rows):
            self.segmenter.forget(uid)
        self._stale.discard(rows)
        self.recount()
        return len(rows)

    def global_state(self) -> dict[str, Any]:
        """State shared by all partitions: segmenter, row layout, pending re-assignments, dedup window."""
        return {"spec": self.store.spec.to_dict(), "segmenter": self.segmenter.state_dict(),
                "layout": self.store.layout(), "stale": self._stale.rows(),
                "events_seen": self.events_seen,
                "dedup": None if self.dedup is None else self.dedup.state(),
                # dwell clock per row, profile schedule
                "changed_at": self._changed_at.copy(), "since_profile": self._since_profile,
                "label_bounds": self._labels.bounds.state(),
                "profile_rng": json.dumps(self._profile_rng.bit_generator.state),
                "sample_rng": json.dumps(self._sample_rng.bit_generator.state),
                "tails": self.tails.to_columns()}

    def model_state(self) -> dict[str, Any]:
        """What the changelog's checkpoint marker carries: :meth:`global_state` less what names store rows
        (row layout, re-assignment queue, dwell clocks, label bounds), which mean nothing to another member's store."""
        state = self.global_state()
        state.pop("layout")
        state["tails"] = None  # the changelog keeps evicted users' tails as their own records
        state["stale"] = np.zeros(0, dtype=np.int64)
        state["changed_at"] = np.zeros(0, dtype=np.float64)
        # per row too, and those of users no checkpoint touched move with every version: a restore measures
        # them again (Pipeline._certify_restored)
        state["label_bounds"] = np.zeros((2, 0), dtype=np.float32)
        return state

    def stale_rows(self) -> np.ndarray:
        """Rows queued for re-assignment, in queue order (the changelog saves them as user ids)."""
        return self._stale.rows()

    def requeue(self, rows: np.ndarray) -> None:
        """Queue restored users for re-assignment again, in the order they were queued."""
        if len(rows):
            self._stale.add(rows)

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Load what :meth:`model_state` saved (a fresh pipeline restoring from the changelog)."""
        self.load_global_state(state)

    def load_global_state(self, state: dict[str, Any]) -> None:
        if json.dumps(state["spec"], sort_keys=True) != json.dumps(self.store.spec.to_dict(), sort_keys=True):
            raise ValueError("the checkpoint was written with another feature configuration (encoder): "
                             "point SEGSTREAM_CHECKPOINT_DIR elsewhere or remove it to start from scratch")
        self.segmenter.load_state_dict(state["segmenter"])
        self._stale = RowQueue(np.asarray(state["stale"], dtype=np.int64))
        self.events_seen = int(state["events_seen"])
        if self.dedup is not None and state.get("dedup") is not None:
            self.dedup.load(state["dedup"])
        if state.get("tails") is not None:
            self.tails.load_columns(state["tails"])
        if "label_bounds" in state:  # the version they refer to is the segmenter's, restored above
            self._labels.bounds.load(state["label_bounds"])
            self._labels.model = self.segmenter.model
        if "changed_at" in state:
            self._changed_at = np.asarray(state["changed_at"], dtype=np.float64).copy()
            self._since_profile = int(state["since_profile"])
            self._profile_rng.bit_generator.state = json.loads(state["profile_rng"])
            self._sample_rng.bit_generator.state = json.loads(state["sample_rng"])
