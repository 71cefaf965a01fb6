"""Cost of one checkpoint's persist step (snapshot files) and of a restore, by users held.

    python -m bench.checkpoint --users 10000,100000

For each size, the real pipeline (raw encoder) is fed events of new users until it
holds ``users`` users spread over 6 partitions; then the snapshot of every partition
plus the shared state is written with :class:`~stream.runtime.checkpoints.CheckpointStore`
(fsync included) and read back into a fresh pipeline as a restore on start does.
Prints one JSON object per size: seconds to write, seconds to restore, bytes on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np

from bench.common import emit
from stream.runtime.checkpoints import CheckpointStore
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings

PARTS = 6


def measure(users: int) -> dict:
    settings = Settings(max_users=users + 1, warmup_users=200)
    p = Pipeline.from_settings(settings, now=lambda: 2e9)
    chunk = 5000
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        raws = [msgpack.packb({"user_id": f"u{start + i}", "action": "view", "ts": 1.7e9 + start + i,
                               "item_id": (start + i) % 997, "categories": [f"c{i % 20}"]}) for i in range(n)]
        p.process_records(raws, np.arange(start, start + n, dtype=np.int32) % PARTS)
    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(tmp, "bench", "events")
        t = time.perf_counter()
        ckpt = store.write(p.global_state(), {
            q: (users, p.store.export_rows(p.store.rows_of_partition(q))) for q in range(PARTS)})
        write_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.snap"))
        t = time.perf_counter()
        fresh = Pipeline.from_settings(settings, now=lambda: 2e9)
        state = store.load_global(ckpt)
        fresh.load_global_state(state)
        for q in range(PARTS):  # what StreamRunner._restore does with the pipeline
            fresh.import_users(store.best(q, users).load()["users"], keep_rows=True)
        fresh.finish_restore(state["layout"])
        restore_s = time.perf_counter() - t
        assert len(fresh.store) == len(p.store) == users
    return {"write_seconds": round(write_s, 4), "restore_seconds": round(restore_s, 4), "bytes": size,
            "bytes_per_user": round(size / users, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", default="10000,100000")
    args = ap.parse_args()
    for n in (int(x) for x in args.users.split(",")):
        emit("checkpoint", measure(n), users=n, partitions=PARTS)


if __name__ == "__main__":
    main()
