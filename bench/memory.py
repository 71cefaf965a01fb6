"""Resident memory per tracked user (the model and the encoder excluded).

    python -m bench.memory --users 100000,1000000

For each size a fresh child process builds the pipeline (encoder loaded,
segments seeded on the first users: that is the baseline), then feeds
events of new users through the real ``Pipeline.process_objects`` until it
tracks ``users`` users, and reports ``(RSS after - RSS at baseline) /
users added``, after garbage collection and ``malloc_trim``. Everything the
consumer keeps per user counts: the columnar state, the id map, the
segment bookkeeping.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
from typing import Any

from bench.common import bench_encoder, emit, note, rss_bytes, synthetic_log

CHUNK = 5000
BASE_USERS = 10_000


def _events(first: int, last: int) -> list[dict[str, Any]]:
    return [{"user_id": f"user-{u:09d}", "action": ("view", "click", "purchase")[u % 3], "ts": 1.70e9 + u * 0.01,
             "item_id": f"item-{u % 50_000}", "categories": [f"cat-{u % 40}"], "value": float(u % 5)}
            for u in range(first, last)]


def _settle() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_bytes()


def measure(users: int, encoder: str, segments: int) -> dict[str, Any]:
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    p = Pipeline.from_settings(Settings(encoder=encoder, segments=segments, max_users=users, metrics_port=0),
                               now=lambda: 2e9)
    for start in range(0, BASE_USERS, CHUNK):
        p.process_objects(_events(start, start + CHUNK))
    base = _settle()
    for start in range(BASE_USERS, users, CHUNK):
        p.process_objects(_events(start, min(users, start + CHUNK)))
    after = _settle()
    tracked = len(p.store)
    return {"users": tracked, "rss_baseline_bytes": base, "rss_bytes": after,
            "bytes_per_user": round((after - base) / (tracked - BASE_USERS), 1),
            "state_columns_bytes_per_user": round(p.store.nbytes() / max(1, len(p.store._ids)), 1),
            "itemised_bytes_per_user": itemise(p.store)}


def itemise(store: Any) -> dict[str, float]:
    """What the store holds per user, by part: each state column (as allocated, rows for ``capacity``
    users), the row key, the id index, and the ids themselves (the row -> id list and the ``str`` objects)."""
    from state.user_store import COLUMNS

    users = max(1, len(store))
    out = {name: round(getattr(store, name).nbytes / users, 1) for name in (*COLUMNS, "key")}
    out["id_index"] = round(store._index.nbytes() / users, 1)
    ids = [u for u in store._ids if u is not None]
    out["ids"] = round((sys.getsizeof(store._ids) + sum(map(sys.getsizeof, ids))) / users, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="100000,1000000")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--encoder", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        print(json.dumps(measure(a.child, a.encoder, a.segments)))
        return 0
    encoder = bench_encoder(synthetic_log(20_000, 200_000), a.dim)
    figures = {}
    for n in [int(x) for x in a.users.split(",")]:
        note(f"measuring {n:,} users")
        out = subprocess.run([sys.executable, "-m", "bench.memory", "--child", str(n), "--encoder", str(encoder),
                              "--segments", str(a.segments)], check=True, capture_output=True, text=True)
        figures[str(n)] = json.loads(out.stdout.strip().splitlines()[-1])
        note(f"{n:,}: {figures[str(n)]}")
    emit("memory", figures, segments=a.segments, dim=a.dim, encoder=encoder.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
