"""Keyed-hash pseudonymisation of user ids, before anything is stored or published.

With ``SEGSTREAM_PSEUDONYMISE_KEY`` set, every user id is replaced by
HMAC-SHA-256(key, id) (hex, first 32 characters) right after decoding: state,
checkpoints, segment events and tombstones only ever see the pseudonym. The
same key maps the same user to the same pseudonym, so a service holding the
key can look a user up (and a ``delete`` event still reaches the right state).

    >>> p = Pseudonymiser("secret")
    >>> a = p.pseudonym("alice")
    >>> len(a), a == p.pseudonym("alice"), a == Pseudonymiser("other").pseudonym("alice")
    (32, True, False)
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
        secret = key.encode()

        @lru_cache(maxsize=1 << 16)
        def pseudonym(user_id: str) -> str:
            return hmac.new(secret, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

        self.pseudonym = pseudonym

    def apply(self, batch: EventBatch) -> EventBatch:
        p = self.pseudonym
        return dataclasses.replace(batch, user_ids=[p(u) for u in batch.user_ids],
                                   deletes=[(i, p(u)) for i, u in batch.deletes])
