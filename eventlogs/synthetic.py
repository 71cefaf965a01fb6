"""Synthetic behaviour logs with planted user groups and optional abrupt drift.

Every user belongs to one of ``groups`` planted groups. A group has an
interest profile (a few categories and a pool of items it mostly touches)
and its own action mix. With ``drift_at`` set, the first ``drift_groups``
groups switch to a fresh profile at that point of event time: the ground
truth (``group``) stays, the behaviour changes. Each event also carries a
per-user sequence number ``n`` and an ``event_id``, extra fields the input
contract ignores (``event_id`` is used for de-duplication).

    >>> cfg = SyntheticConfig(users=50, groups=2, events=200, seed=1)
    >>> evs = list(generate(cfg))
    >>> len(evs), sorted({e["group"] for e in evs})
    (200, [0, 1])
    >>> all(a["ts"] <= b["ts"] for a, b in zip(evs, evs[1:]))
    True
    >>> evs == list(generate(cfg))  # seeded
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SyntheticConfig", "generate", "ACTIONS"]

ACTIONS = ("view", "click", "add_to_cart", "purchase", "rate")


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2000
    groups: int = 4
    events: int = 40_000
    categories_per_group: int = 3
    items_per_group: int = 200
    shared_items: int = 100
    start_ts: float = 1_704_067_200.0  # 2024-01-01T00:00:00Z: always in the past
    duration_s: float = 14 * 86400.0
    drift_at: float | None = None  # fraction of the event-time span where drift happens
    drift_groups: int = 0
    noise: float = 0.1  # share of events off-profile
    shared_share: float = 0.15  # share of on-profile events on globally popular items
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < self.groups or self.groups < 1:
            raise ValueError("need at least one user per group")
        if self.drift_groups > self.groups:
            raise ValueError("drift_groups > groups")
        if self.drift_at is not None and not 0.0 < self.drift_at < 1.0:
            raise ValueError("drift_at must be a fraction in (0, 1)")

    @property
    def drift_ts(self) -> float | None:
        return None if self.drift_at is None else self.start_ts + self.drift_at * self.duration_s

    def group_of_users(self) -> np.ndarray:
        """Planted group of user index u (users are ``u000000`` ...)."""
        return np.random.default_rng([self.seed, 1]).permutation(np.arange(self.users) % self.groups)


def user_name(u: int) -> str:
    return f"u{u:06d}"


def generate(cfg: SyntheticConfig) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng([cfg.seed, 2])
    K, cpg, ipg = cfg.groups, cfg.categories_per_group, cfg.items_per_group
    n_profiles = 2 * K  # profile g before drift, K + g after
    n_items = n_profiles * ipg + cfg.shared_items
    group = cfg.group_of_users()
    activity = rng.lognormal(0.0, 0.6, cfg.users)
    action_mix = rng.dirichlet(np.full(len(ACTIONS), 0.7), size=K)
    price_scale = rng.uniform(5.0, 200.0, size=K)

    n = cfg.events
    ts = np.sort(rng.uniform(cfg.start_ts, cfg.start_ts + cfg.duration_s, n))
    ts = np.round(ts, 3)
    users = rng.choice(cfg.users, size=n, p=activity / activity.sum())
    g = group[users]
    profile = g.copy()
    if cfg.drift_ts is not None and cfg.drift_groups:
        drifting = (g < cfg.drift_groups) & (ts >= cfg.drift_ts)
        profile[drifting] = K + g[drifting]
    # item choice: own pool (Zipf-like), shared popular items, or noise
    u = rng.random(n)
    in_pool = rng.zipf(1.3, n) % ipg
    item = profile * ipg + in_pool
    shared = (u >= cfg.noise) & (u < cfg.noise + cfg.shared_share)
    item[shared] = n_profiles * ipg + (rng.zipf(1.5, shared.sum()) % cfg.shared_items)
    noisy = u < cfg.noise
    item[noisy] = rng.integers(0, n_items, noisy.sum())
    # an item's category follows from its profile (shared items: "popular")
    item_profile = np.minimum(item // ipg, n_profiles)
    category = item_profile * cpg + (item % cpg)
    act = np.empty(n, dtype=np.int64)
    for k in range(K):
        m = g == k
        act[m] = rng.choice(len(ACTIONS), size=m.sum(), p=action_mix[k])
    price = np.round(rng.lognormal(0.0, 0.4, n) * price_scale[g], 2)
    rating = np.clip(np.round(rng.normal(3.5, 1.0, n) * 2) / 2, 0.5, 5.0)

    seq = np.zeros(cfg.users, dtype=np.int64)
    for i in range(n):
        uu = int(users[i])
        seq[uu] += 1
        a = ACTIONS[int(act[i])]
        ev: dict[str, Any] = {
            "user_id": user_name(uu),
            "action": a,
            "ts": float(ts[i]),
            "item_id": f"i{int(item[i]):05d}",
            "categories": ["popular" if item_profile[i] == n_profiles else f"c{int(category[i]):03d}"],
        }
        if a == "purchase":
            ev["value"] = float(price[i])
        elif a == "rate":
            ev["value"] = float(rating[i])
        ev["event_id"] = f"{ev['user_id']}-{int(seq[uu])}"
        ev["n"] = int(seq[uu])
        ev["group"] = int(g[i])
        yield ev
