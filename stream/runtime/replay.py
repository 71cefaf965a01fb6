"""Replay a recorded log through the pipeline without a broker (``segstream replay``).

Deterministic: with ``clock="event"`` the ``emitted_at`` of each segment event
is the batch's newest event time instead of the wall clock, so two replays of
the same log with the same settings give byte-identical output.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import msgpack
import numpy as np

from eventlogs.recorded import read_event_chunks
from stream.contracts.user_segments import change_ids, encode_user_segments
from stream.runtime.batch_result import BatchResult
from stream.runtime.pipeline import Pipeline
from stream.runtime.summary import RunSummary
from stream.settings import Settings

__all__ = ["replay_log"]


def replay_log(settings: Settings, log_path: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None, *,
               clock: str = "wall", pipeline: Pipeline | None = None,
               on_batch: Callable[[BatchResult], None] | None = None) -> RunSummary:
    if clock not in ("wall", "event"):
        raise ValueError("clock must be 'wall' or 'event'")
    pipeline = pipeline or Pipeline.from_settings(settings, now=(lambda: math.inf) if clock == "event" else time.time)
    summary = RunSummary()
    out = open(out_path, "wb") if out_path else None
    t0 = time.perf_counter()
    try:
        for chunk in read_event_chunks(log_path, settings.batch_max_events):
            result = pipeline.process_objects(chunk)
            base = summary.events  # a log replays like one partition: offset = position in the log
            summary.add_batch(len(chunk), result)
            if out is not None:
                emitted_at = result.max_event_time if clock == "event" else time.time()
                offsets = base + np.arange(len(chunk), dtype=np.int64)
                ids = change_ids(result.changes, np.zeros(len(chunk), np.int64), offsets)
                for key, value in encode_user_segments(result.changes, result.erased, emitted_at, ids):
                    out.write(msgpack.packb([key, value]))
            if on_batch is not None:
                on_batch(result)
    finally:
        if out is not None:
            out.close()
    summary.seconds = time.perf_counter() - t0
    summary.stopped_by = "end-of-log"
    return summary
