"""The naive reference: the same parts, one event at a time.

Per event: validate it alone, update that user's state alone, encode that one
state (a batch of one), then river ``learn_one`` + ``predict_one`` with the
embedding as a dict. This is what a straightforward streaming consumer does;
``bench.throughput --modes file,naive`` reports segstream's micro-batched hot
path as a multiple of it, on the same log and the same encoder.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from eventlogs.recorded import read_events


def naive_rate(log: Path, encoder: Path, segments: int, users: int, limit: int) -> dict[str, Any]:
    from river import cluster

    from encoders.serving import load_encoder
    from state.user_store import UserStore
    from state.events import EventDecoder

    enc = load_encoder(str(encoder), device="cpu")
    store = UserStore(enc.spec, capacity=max(2 * users, 1000))
    decoder = EventDecoder(enc.spec, now=lambda: float("inf"))
    km = cluster.KMeans(n_clusters=segments, halflife=0.02, seed=0)
    assigned: dict[str, int] = {}
    changes = 0
    events = list(itertools.islice(read_events(log), limit))
    t = time.perf_counter()
    for ev in events:
        batch, rejected = decoder.decode_objects([ev])
        if rejected or not len(batch):
            continue
        row = store.apply(batch).rows
        x = dict(enumerate(enc.encode(store.features(row))[0].tolist()))
        km.learn_one(x)
        seg = km.predict_one(x)
        uid = batch.user_ids[0]
        if assigned.get(uid) != seg:
            assigned[uid] = seg
            changes += 1
    secs = time.perf_counter() - t
    return {"events": len(events), "seconds": round(secs, 3), "events_per_s": round(len(events) / secs),
            "segment_changes": changes}
