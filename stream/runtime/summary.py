"""What a run of the consumer, or a replay of a recorded log, did: one type for both.

The run loop and replay count batches into it the same way (:meth:`RunSummary.add_batch`),
and ``segstream run`` and ``segstream replay`` print it the same way
(:meth:`RunSummary.as_dict`), so scripts read one set of JSON keys from either.

    >>> s = RunSummary(events=3000, invalid=2, changes=41, batches=3, seconds=0.5, stopped_by="end-of-log")
    >>> s.as_dict()["events_per_second"], s.as_dict()["segment_changes"]
    (6000, 41)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.runtime.batch_result import BatchResult

__all__ = ["RunSummary"]


@dataclass
class RunSummary:
    events: int = 0  # records taken in: valid events, deletes and rejected records
    invalid: int = 0  # rejected records (dead-lettered by the consumer)
    changes: int = 0  # segment changes published (or written by a replay)
    batches: int = 0
    seconds: float = 0.0  # wall time of the run loop (group join and idle waits included) or of the replay
    stopped_by: str = ""  # signal, max-events, idle; end-of-log for a replay
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> offset committed

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else math.nan

    def add_batch(self, records: int, result: BatchResult) -> None:
        """Count one processed micro-batch of ``records`` records."""
        self.events += records
        self.invalid += len(result.rejected)
        self.changes += len(result.changes)
        self.batches += 1

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary the CLI prints (``events_per_second`` is null when no time was measured)."""
        rate = self.events_per_second
        return {"events": self.events, "invalid": self.invalid, "segment_changes": self.changes,
                "batches": self.batches, "stopped_by": self.stopped_by,
                "committed": {f"{topic}:{partition}": off for (topic, partition), off in sorted(self.committed.items())},
                "seconds": round(self.seconds, 3), "events_per_second": None if math.isnan(rate) else round(rate)}
