"""Seeded generator of malformed input records (and good ones to interleave) for the fuzz tests."""

from __future__ import annotations

import math
import random

import msgpack


def good_event(rng: random.Random, i: int, users: int = 100) -> dict:
    return {"user_id": f"user-{rng.randrange(users)}", "action": rng.choice(["view", "click", "purchase", "rate", "share"]),
            "ts": 1.7e9 + i, "item_id": rng.randrange(1000), "categories": [f"c{rng.randrange(12)}"],
            "value": rng.random() * 5, "event_id": f"ev-{i}"}


def _nested(depth: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(depth):
        d = {"a": d}
    return d


def _wrong_values(rng: random.Random) -> list:
    return [[1, 2], {"x": 1}, True, b"\x00\xff", 3.5, -7, msgpack.ExtType(5, b"zz"), _nested(rng.randrange(2, 60)),
            "x" * rng.randrange(257, 3000), "", None]


def bad_record(rng: random.Random, i: int) -> bytes | None:
    """One record that input contract v1 must reject (every branch is invalid by construction)."""
    base = good_event(rng, i)
    kind = rng.randrange(16)
    if kind == 0:  # truncated
        raw = msgpack.packb(base)
        return raw[: rng.randrange(0, len(raw) - 1)]
    if kind == 1:  # random bytes, starting with a map header so that the decoder gets some way in
        return bytes([0x80 | rng.randrange(1, 16)]) + rng.randbytes(rng.randrange(0, 64))
    if kind == 2:  # wrong type or bad value for a required field
        field = rng.choice(["user_id", "action", "ts"])
        choices = [v for v in _wrong_values(rng) if not (field == "user_id" and type(v) is int)
                   and not (field == "ts" and type(v) in (float, int))]
        base[field] = rng.choice(choices)
        return msgpack.packb(base, use_bin_type=True)
    if kind == 3:  # wrong type for an optional field
        field = rng.choice(["item_id", "categories", "value", "event_id"])
        bad = [v for v in _wrong_values(rng) if v is not None
               and not (field in ("item_id", "event_id") and type(v) is int)
               and not (field == "value" and type(v) in (float, int))
               and not (field == "categories" and type(v) is list and all(type(x) is str for x in v))]
        base[field] = rng.choice(bad)
        return msgpack.packb(base, use_bin_type=True)
    if kind == 4:  # NaN / inf
        base[rng.choice(["ts", "value"])] = rng.choice([math.nan, math.inf, -math.inf])
        return msgpack.packb(base)
    if kind == 5:  # far-future, negative, ancient, overflowing timestamps
        base["ts"] = rng.choice([-1.0, -1e18, 0, 1e11, 4.1e9, 2**63 - 1, 2**64 - 1, -(2**63), 1e300])
        return msgpack.packb(base)
    if kind == 6:  # missing or empty ids
        if rng.random() < 0.5:
            del base["user_id"]
        else:
            base["user_id"] = ""
        return msgpack.packb(base)
    if kind == 7:  # missing action / ts
        del base[rng.choice(["action", "ts"])]
        return msgpack.packb(base)
    if kind == 8:  # huge strings inside the size limit
        base[rng.choice(["user_id", "action", "item_id"])] = "ü" * rng.randrange(300, 5000)
        return msgpack.packb(base)
    if kind == 9:  # too many or too long categories
        base["categories"] = (["c"] * rng.randrange(65, 500)) if rng.random() < 0.5 else ["x" * 300]
        return msgpack.packb(base)
    if kind == 10:  # deeply nested containers (beyond msgpack's own depth limit)
        return b"\x91" * rng.randrange(2000, 20000) + b"\x00"
    if kind == 11:  # not a map at the top
        return msgpack.packb(rng.choice([[1, 2, 3], "event", 42, None, 1.5, [base]]))
    if kind == 12:  # oversized (rare: each is > 64 KiB)
        if rng.random() < 0.05:
            return msgpack.packb({**base, "pad": "p" * 70000})
        return msgpack.packb({**base, "categories": {"not": "a list"}})
    if kind == 13:  # null value (key only)
        return None
    if kind == 14:  # trailing garbage after a valid event
        return msgpack.packb(base) + rng.randbytes(rng.randrange(1, 8))
    # a map with non-string keys and a bool timestamp
    return msgpack.packb({1: "x", (1, 2): 3, "user_id": "u", "action": "view", "ts": rng.choice([True, False])},
                         strict_types=False)


def mixed_log(n_bad: int, n_good: int, seed: int = 11) -> tuple[list[bytes | None], set[int]]:
    """Interleaved records and the positions of the bad ones."""
    rng = random.Random(seed)
    out: list[bytes | None] = []
    bad: set[int] = set()
    g = b = 0
    while g < n_good or b < n_bad:
        if b < n_bad and (g >= n_good or rng.random() < n_bad / (n_bad + n_good)):
            bad.add(len(out))
            out.append(bad_record(rng, len(out)))
            b += 1
        else:
            out.append(msgpack.packb(good_event(rng, len(out))))
            g += 1
    return out, bad
