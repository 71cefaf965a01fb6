"""Resident memory per tracked user (the model and the encoder excluded).

    python -m bench.memory --users 100000,1000000

For each size a fresh child process builds the pipeline (encoder loaded,
segments seeded on the first users, every item of the log seen once: that
is the baseline), then feeds events of new users through the real
``Pipeline.process_objects`` until it tracks ``users`` users, and reports
``(RSS after - RSS at baseline) / users added``, after garbage collection
and ``malloc_trim``. Everything the consumer keeps per user counts: the
columnar state, the ids and their index, the segment bookkeeping, and what
the run loop keeps per row for the state changelog (each changed user's
last change id, the rows changed since the last checkpoint), fed here as
the run loop feeds it. The per-item caches (item tokens, item names) are
bounded by the items, not the users: the baseline holds them already.

The JSON itemises every per-user part (bytes per user as allocated) and
what the parts leave out (``unitemised``: allocator slack and Python
objects no part names).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
from typing import Any

import numpy as np

from bench.common import bench_encoder, emit, note, rss_bytes, synthetic_log

CHUNK = 5000
BASE_USERS = 10_000
ITEMS = 50_000


def _events(first: int, last: int, items: range | None = None) -> list[dict[str, Any]]:
    """One event per user ``first..last-1``; ``items``: the items of these events instead (as many events,
    users taken in turn: the baseline's users see every item once)."""
    users = range(first, last) if items is None else [first + i % (last - first) for i in items]
    its = (u % ITEMS for u in users) if items is None else iter(items)
    return [{"user_id": f"user-{u:09d}", "action": ("view", "click", "purchase")[u % 3], "ts": 1.70e9 + u * 0.01,
             "item_id": f"item-{i}", "categories": [f"cat-{u % 40}"], "value": float(u % 5)}
            for u, i in zip(users, its)]


def _settle() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_bytes()


def measure(users: int, encoder: str, segments: int) -> dict[str, Any]:
    from stream.contracts.user_segments import change_ids
    from stream.runtime.changelog import Changelog
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    p = Pipeline.from_settings(Settings(encoder=encoder, segments=segments, max_users=users, metrics_port=0),
                               now=lambda: 2e9)
    changelog = Changelog("bench.changelog", publisher=None, pipeline=p)  # type: ignore[arg-type]
    offset = 0

    def feed(events: list[dict[str, Any]]) -> None:
        nonlocal offset
        result = p.process_objects(events)
        # what the run loop does after each batch (Runner._note_changes), the sources being one partition
        changelog.mark(result.touched)
        ids = change_ids(result.changes, np.zeros(len(events), np.int64), np.arange(offset, offset + len(events)))
        offset += len(events)
        if ids:
            rows = p.store.rows_of(result.changes.user_ids)
            p.tails.set_change_ids(rows, ids)
            changelog.mark(rows)

    for start in range(0, BASE_USERS, CHUNK):
        feed(_events(start, start + CHUNK))
    for start in range(0, ITEMS, CHUNK):
        feed(_events(0, BASE_USERS, range(start, min(ITEMS, start + CHUNK))))
    base = _settle()
    for start in range(BASE_USERS, users, CHUNK):
        feed(_events(start, min(users, start + CHUNK)))
    after = _settle()
    tracked = len(p.store)
    per_user = round((after - base) / (tracked - BASE_USERS), 1)
    parts = itemise(p)
    parts["changelog_dirty"] = round(changelog._dirty.nbytes / max(1, tracked), 1)
    return {"users": tracked, "rss_baseline_bytes": base, "rss_bytes": after, "bytes_per_user": per_user,
            "state_columns_bytes_per_user": round(p.store.nbytes() / max(1, tracked), 1),
            "itemised_bytes_per_user": parts,
            # what the parts leave out: allocator slack, objects of the batches in flight, and anything
            # per user that the itemisation does not name
            "unitemised_bytes_per_user": round(per_user - sum(parts.values()), 1)}


def itemise(pipeline: Any) -> dict[str, float]:
    """What the consumer holds per user, by part: each state column of the store (as allocated: rows for
    every user so far, up to ``capacity``), its decay reference ``ref`` and row key, the last change id
    of each row (kept beside the store), the label bounds of each row (``state/relabel.py``), the ids
    (row -> id) and the id index (id -> row)."""
    from state.user_store import COLUMNS

    store = pipeline.store
    users = max(1, len(store))
    out = {name: round(getattr(store, name).nbytes / users, 1) for name in (*COLUMNS, "ref", "key")}
    out["change_id"] = round(pipeline.tails.row_nbytes() / users, 1)
    out["label_bounds"] = round(pipeline._labels.bounds.nbytes() / users, 1)
    out["ids"] = round(store.ids_nbytes() / users, 1)
    out["id_index"] = round(store.index_nbytes() / users, 1)
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
