"""Keyed-hash pseudonymisation of every identifier that can carry a user id, before anything is stored.

With ``SEGSTREAM_PSEUDONYMISE_KEY`` set, every ``user_id`` and every ``event_id`` is replaced by
HMAC-SHA-256(key, id) (hex, first 32 characters) right after decoding, before de-duplication, state,
checkpoints or any output sees it. Event ids are covered because producers commonly build them from
the user id (``"u001307-4"``): a raw event id in the de-duplication window would keep the user
identifiable in every snapshot. The same key maps the same id to the same pseudonym, so a service
holding the key can look a user up (``segstream lookup``), a ``delete`` event with the raw id still
reaches the right state, and a re-delivered event still matches its first copy.

    >>> p = Pseudonymiser("secret")
    >>> a = p.pseudonym("alice")
    >>> len(a), a == p.pseudonym("alice"), a == Pseudonymiser("other").pseudonym("alice")
    (32, True, False)
    >>> p.event_id("alice-1") == p.pseudonym("alice-1"), p.event_id(None)
    (True, None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from functools import lru_cache

from state.events import EventBatch

__all__ = ["Pseudonymiser"]


class Pseudonymiser:
    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("an empty key would not pseudonymise anything")
        base = hmac.new(key.encode(), digestmod=hashlib.sha256)  # keyed once; copying it skips the key schedule

        def digest(value: str) -> str:
            h = base.copy()
            h.update(value.encode("utf-8", "surrogatepass"))
            return h.hexdigest()[:32]

        self._digest = digest
        # user ids repeat batch after batch: cached; event ids are unique, a cache would only churn
        self.pseudonym = lru_cache(maxsize=1 << 16)(digest)

    def event_id(self, event_id: str | None) -> str | None:
        """The pseudonym of an event id (None: the event carries none)."""
        return None if event_id is None else self._digest(event_id)

    def apply(self, batch: EventBatch) -> EventBatch:
        """The batch with its user ids, delete targets and event ids pseudonymised."""
        p, d = self.pseudonym, self._digest
        return dataclasses.replace(batch, user_ids=[p(u) for u in batch.user_ids],
                                   deletes=[(i, p(u)) for i, u in batch.deletes],
                                   event_ids=[None if e is None else d(e) for e in batch.event_ids])
