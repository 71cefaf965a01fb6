"""Dropping re-delivered input events by ``event_id`` within a bounded window.

Upstream producers are at-least-once too: the same event can arrive twice.
When events carry the optional ``event_id``, :class:`EventIdWindow` keeps the
last ``size`` ids seen (insertion order, oldest forgotten first) and drops an
event whose id is still in the window. Events without an id always pass.

    >>> from state.features import FeatureSpec
    >>> from state.events import EventDecoder
    >>> dec = EventDecoder(FeatureSpec(), now=lambda: 2e9)
    >>> batch, _ = dec.decode_objects([
    ...     {"user_id": "a", "action": "view", "ts": 1.7e9, "event_id": "e1"},
    ...     {"user_id": "a", "action": "view", "ts": 1.7e9, "event_id": "e1"},
    ...     {"user_id": "b", "action": "view", "ts": 1.7e9}])
    >>> w = EventIdWindow(size=2)
    >>> kept, dropped = w.filter(batch)
    >>> kept.user_ids, dropped
    (['a', 'b'], 1)
    >>> w.filter(batch)[1]   # both e1 copies are repeats now
    2
    >>> w.erase({"a"}), len(w)   # an erased user's ids leave the window
    (1, 0)

Each id is kept with the user it belongs to (the pseudonym when pseudonymisation is on), so that
a ``delete`` removes the user's event ids too (:meth:`EventIdWindow.erase`): producers often
build event ids from user ids.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from state.events import EventBatch

__all__ = ["EventIdWindow"]


class EventIdWindow:
    """The most recent ``size`` event ids, each with its user (memory: ``size`` strings and references)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("size must be > 0")
        self.size = size
        self._seen: OrderedDict[str, str | None] = OrderedDict()  # event id -> user id (None: unknown)

    def __len__(self) -> int:
        return len(self._seen)

    def filter(self, batch: EventBatch) -> tuple[EventBatch, int]:
        """The batch without repeated events, and how many were dropped."""
        if not batch.event_ids:
            return batch, 0
        seen = self._seen
        users = batch.user_ids
        keep = np.ones(len(batch), dtype=bool)
        for i, eid in enumerate(batch.event_ids):
            if eid is None:
                continue
            if eid in seen:
                keep[i] = False
                continue
            seen[eid] = users[i]
            if len(seen) > self.size:
                seen.popitem(last=False)
        dropped = int((~keep).sum())
        return (batch if dropped == 0 else batch.select(keep)), dropped

    def erase(self, users: set[str]) -> int:
        """Drop the event ids of these users (a ``delete``); returns how many went. A scan of the
        window, paid only in batches that carry a delete."""
        gone = [eid for eid, uid in self._seen.items() if uid in users]
        for eid in gone:
            del self._seen[eid]
        return len(gone)

    def state(self) -> dict[str, list]:
        """Checkpoint form: ids oldest first, and each id's user."""
        return {"ids": list(self._seen), "users": list(self._seen.values())}

    def load(self, state: dict[str, list] | list[str]) -> None:
        """Take over :meth:`state` (a bare list of ids, as checkpoints before users were kept: users unknown)."""
        if isinstance(state, dict):
            pairs = list(zip(state["ids"], state["users"]))
        else:
            pairs = [(eid, None) for eid in state]
        self._seen = OrderedDict(pairs[-self.size :])
