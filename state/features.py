"""The feature configuration: how events map onto the columns of a user's state.

A :class:`FeatureSpec` is stored inside every encoder artifact and every
checkpoint, so that training, serving and recovery all lay out a user's state
the same way. Mapping strings to columns uses stable hashes (CRC-32), never
Python's salted ``hash``, so that two processes agree::

    >>> spec = FeatureSpec(category_vocab=("Drama", "Comedy"))
    >>> spec.action_index("purchase"), spec.action_index("teleport") == spec.other_action
    (3, True)
    >>> spec.category_bucket("Drama"), spec.category_bucket("Comedy")
    (0, 1)
    >>> 2 <= spec.category_bucket("Film-Noir") < spec.category_buckets
    True
    >>> spec.item_token(42) == spec.item_token("42")
    True
    >>> FeatureSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FeatureSpec", "DEFAULT_ACTIONS", "DEFAULT_HALF_LIFE_S"]

DEFAULT_ACTIONS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rate")
DEFAULT_HALF_LIFE_S = 14 * 86400.0
_CACHE_LIMIT = 200_000


def crc32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class FeatureSpec:
    """Layout of the per-user state.

    Dense columns (all event-time decayed sums): ``count``, ``value_sum``,
    ``value_count``, one column per action (plus ``other``), then
    ``category_buckets`` category columns. Besides them each user keeps the
    last ``item_history`` item tokens with their decayed weights.
    """

    actions: tuple[str, ...] = DEFAULT_ACTIONS
    category_buckets: int = 32
    category_vocab: tuple[str, ...] = ()
    item_history: int = 16
    item_token_space: int = 1 << 31
    half_life_s: float = DEFAULT_HALF_LIFE_S
    version: int = 1

    def __post_init__(self) -> None:
        if self.category_buckets <= len(self.category_vocab):
            raise ValueError("category_buckets must exceed the size of category_vocab (room for unseen categories)")
        if self.half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        if self.item_history <= 0 or self.item_history > 255:
            raise ValueError("item_history must be in 1..255")
        # Per-process lookup caches (not part of equality or serialisation).
        object.__setattr__(self, "_action_ix", {a: i for i, a in enumerate(self.actions)})
        object.__setattr__(self, "_cat_cache", {c: i for i, c in enumerate(self.category_vocab)})
        object.__setattr__(self, "_item_cache", {})
        object.__setattr__(self, "_item_firsts", {})  # token -> item id, first sightings not yet taken

    # ----- layout --------------------------------------------------------
    @property
    def n_actions(self) -> int:
        """Known actions plus the ``other`` bucket."""
        return len(self.actions) + 1

    @property
    def other_action(self) -> int:
        return len(self.actions)

    COUNT = 0
    VALUE_SUM = 1
    VALUE_COUNT = 2

    @property
    def action_offset(self) -> int:
        return 3

    @property
    def category_offset(self) -> int:
        return 3 + self.n_actions

    @property
    def dense_width(self) -> int:
        """Columns of the decayed dense state."""
        return self.category_offset + self.category_buckets

    @property
    def feature_width(self) -> int:
        """Columns of the normalised features handed to an encoder."""
        return self.n_actions + self.category_buckets + 3

    def feature_names(self) -> list[str]:
        cats = [f"cat:{c}" for c in self.category_vocab]
        cats += [f"cat#{i}" for i in range(len(self.category_vocab), self.category_buckets)]
        return [f"action:{a}" for a in (*self.actions, "other")] + cats + ["log_count", "log_mean_value", "value_share"]

    # ----- string -> column ---------------------------------------------
    def action_index(self, action: str) -> int:
        return self._action_ix.get(action, len(self.actions))  # type: ignore[attr-defined]

    def category_bucket(self, category: str) -> int:
        cache: dict[str, int] = self._cat_cache  # type: ignore[attr-defined]
        b = cache.get(category)
        if b is None:
            n_fixed = len(self.category_vocab)
            b = n_fixed + crc32(category) % (self.category_buckets - n_fixed)
            if len(cache) < _CACHE_LIMIT:
                cache[category] = b
        return b

    def item_token(self, item_id: str | int) -> int:
        """Stable non-negative token of an item id (ints and their decimal strings agree)."""
        key = item_id if isinstance(item_id, str) else str(item_id)
        cache: dict[str, int] = self._item_cache  # type: ignore[attr-defined]
        t = cache.get(key)
        if t is None:
            t = crc32(key) % self.item_token_space
            if len(cache) < _CACHE_LIMIT:
                cache[key] = t
            firsts: dict[int, str | int] = self._item_firsts  # type: ignore[attr-defined]
            if len(firsts) < _CACHE_LIMIT:
                firsts[t] = item_id
        return t

    def take_item_names(self) -> dict[int, str | int]:
        """Items tokenised for the first time (cache misses) since the last call: token -> the id as the
        input wrote it. The decoder hands them on with its batch, so that segment profiles can name items
        (:class:`state.profiles.ItemNames`) at the cost of a dict entry per *new* item, not per event.

        >>> spec = FeatureSpec(); _ = spec.item_tokens([42, "7", 42])
        >>> sorted(spec.take_item_names().values(), key=str), spec.take_item_names()
        ([42, '7'], {})
        """
        firsts: dict[int, str | int] = self._item_firsts  # type: ignore[attr-defined]
        if not firsts:
            return {}
        out = dict(firsts)
        firsts.clear()
        return out

    # ----- whole columns at once (the decoder's fast path) ---------------
    def action_indices(self, actions: list[str]) -> np.ndarray:
        """:meth:`action_index` of every entry, as int16."""
        got = list(map(self._action_ix.get, actions))  # type: ignore[attr-defined]
        if None in got:
            got = [self.other_action if g is None else g for g in got]
        return np.array(got, dtype=np.int16)

    def category_buckets_of(self, categories: list[str]) -> np.ndarray:
        """:meth:`category_bucket` of every entry, as int32 (cache hits without a Python call each)."""
        got = list(map(self._cat_cache.get, categories))  # type: ignore[attr-defined]
        if None in got:
            got = [self.category_bucket(c) if g is None else g for c, g in zip(categories, got)]
        return np.array(got, dtype=np.int32)

    def item_tokens(self, items: list[str | int | None]) -> np.ndarray:
        """:meth:`item_token` of every entry (``-1`` for ``None``), as int64.

        >>> FeatureSpec().item_tokens(["42", 42, None]).tolist() == [FeatureSpec().item_token(42)] * 2 + [-1]
        True
        """
        got = list(map(self._item_cache.get, items))  # type: ignore[attr-defined]
        if None in got:  # misses, ints (the cache is keyed by the decimal string) and absent items
            got = [g if g is not None else -1 if x is None else self.item_token(x) for x, g in zip(items, got)]
        return np.array(got, dtype=np.int64)

    # ----- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["actions"] = list(self.actions)
        d["category_vocab"] = list(self.category_vocab)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature-spec fields: {sorted(unknown)}")
        d = dict(d)
        d["actions"] = tuple(d.get("actions", DEFAULT_ACTIONS))
        d["category_vocab"] = tuple(d.get("category_vocab", ()))
        return cls(**d)

    def differences(self, other: FeatureSpec) -> list[str]:
        """Field-by-field differences, for clear start-up errors."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
