"""``segstream evaluate movielens``: HR@10 of streaming segments on ml-latest-small.

Protocol (see :mod:`evaluation.hitrate`): each user's first 80% of ratings by
time are history, the rest held out. Encoders are trained on the history log
only (``segstream train-encoder``'s code), the history is replayed through the
consumer's :class:`~stream.runtime.pipeline.Pipeline` (event-time clock, the same
micro-batches, online k-means, hysteresis), and each user's *final streaming
segment* decides their recommendations: the 10 items most rated in that
segment's history that the user has not rated. Reported per encoder (``raw``:
no encoder) and per k: HR@10, the silhouette of the final clustering
(sklearn, on the final embeddings with the held segments as labels), and the
global-popularity baseline (one segment). Writes JSON and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "main", "evaluate"]

KINDS = ("raw", "state-ae", "item-pool")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from eventlogs.movielens import default_movielens_dir

    p.add_argument("--data", default=None, help=f"MovieLens directory (default: {default_movielens_dir()})")
    p.add_argument("--out", default="runs/eval-movielens", help="directory for results.json, hr10.png and artifacts")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), help="encoders to compare (raw = no encoder)")
    p.add_argument("--k", nargs="+", type=int, default=[8, 16, 32], help="numbers of segments")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="pipeline seeds (HR@10 is averaged over them)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each kind's default)")
    p.add_argument("--history-share", type=float, default=0.8)
    p.add_argument("--batch-events", type=int, default=1000, help="micro-batch size of the replay")


def _train(kind: str, log: Path, out: Path, epochs: int | None, progress) -> Path:
    from encoders.train import TrainConfig, train_encoder

    path = out / f"encoder-{kind}.pt"
    cfg = TrainConfig.for_kind(kind)
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    train_encoder(log, path, cfg, progress=progress)
    return path


def _replay(log: Path, encoder: Path | None, k: int, seed: int, batch_events: int, warmup_users: int = 200) -> dict[str, Any]:
    """Segments after a streaming replay.

    ``held``: the segment each user holds at the end (decided at their last
    event by the model of that time: what a recommender reading
    ``user-segments`` would know); ``final``: every user re-assigned to the
    final model's nearest centroid. Silhouettes of both on the final embeddings.
    """
    from sklearn.metrics import silhouette_score

    from state.segments import squared_distances
    from stream.runtime.replay import replay_log
    from stream.settings import Settings

    settings = Settings(segments=k, seed=seed, encoder=str(encoder) if encoder else "", batch_max_events=batch_events,
                        warmup_users=max(k, warmup_users), encoder_device="cpu", metrics_port=0)
    from stream.runtime.pipeline import Pipeline

    pipeline = Pipeline.from_settings(settings, now=lambda: float("inf"))
    replay_log(settings, log, None, clock="event", pipeline=pipeline)
    store = pipeline.store
    rows = store.live_rows()
    rows = rows[store.segment[rows] >= 0]
    users = store.user_ids(rows)
    emb = pipeline.encoder.encode(store.features(rows))
    model = pipeline.model
    if model is None:
        raise ValueError(f"{log}: fewer users than warmup_users={settings.warmup_users}: no segments were seeded")
    held = store.segment[rows]
    final = model.segment_ids[squared_distances(emb, model.centroids).argmin(axis=1)]

    def silhouette(labels: np.ndarray) -> float:
        return float(silhouette_score(emb, labels)) if 1 < len(np.unique(labels)) < len(rows) else float("nan")

    return {"held": dict(zip(users, held.tolist())), "final": dict(zip(users, final.tolist())),
            "silhouette_held": silhouette(held), "silhouette_final": silhouette(final)}


def evaluate(data: str, out: Path, kinds: list[str], ks: list[int], seeds: list[int], *, epochs: int | None = None,
             history_share: float = 0.8, batch_events: int = 1000, progress=print) -> dict[str, Any]:
    from eventlogs.movielens import iter_movielens_events
    from eventlogs.recorded import write_events
    from evaluation.hitrate import hit_rate, split_by_time

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    split = split_by_time(iter_movielens_events(data), history_share)
    log = out / "history.msgpack"
    write_events(log, split.history)
    n_heldout = sum(len(v) for v in split.heldout.values())
    progress(f"{len(split.users)} users: {len(split.history):,} history ratings (replayed), {n_heldout:,} held out")
    popularity = hit_rate({}, split)
    warmup = min(200, len(split.users) // 2)  # the consumer's default, unless the data set is tiny
    progress(f"global popularity HR@10 = {popularity:.4f}")
    results: dict[str, Any] = {
        "protocol": {"data": os.path.basename(os.path.normpath(data)), "history_share": history_share,
                     "users": len(split.users), "history_ratings": len(split.history), "heldout_ratings": n_heldout,
                     "n": 10, "seeds": seeds, "batch_events": batch_events,
                     "warmup_users": warmup},
        "global_popularity_hr10": popularity, "encoders": {},
    }
    for kind in kinds:
        t = time.perf_counter()
        encoder = None if kind == "raw" else _train(kind, log, out, epochs, lambda m, kind=kind: progress(f"  [{kind}] {m}"))
        train_s = time.perf_counter() - t
        per_k: dict[str, Any] = {}
        for k in ks:
            runs = [_replay(log, encoder, k, seed, batch_events, warmup) for seed in seeds]
            hrs = [hit_rate(r["held"], split) for r in runs]
            hrs_final = [hit_rate(r["final"], split) for r in runs]
            per_k[str(k)] = {
                "hr10": float(np.mean(hrs)), "hr10_per_seed": hrs,
                "silhouette": float(np.nanmean([r["silhouette_final"] for r in runs])),
                "hr10_final_model": float(np.mean(hrs_final)),
                "silhouette_held": float(np.nanmean([r["silhouette_held"] for r in runs])),
                "segments_held": len(set(runs[-1]["held"].values())),
            }
            progress(f"{kind:>10}  k={k:<3} HR@10 = {np.mean(hrs):.4f}  (per seed {', '.join(f'{h:.3f}' for h in hrs)})"
                     f"  silhouette = {per_k[str(k)]['silhouette']:.3f}"
                     f"  | final-model re-assignment: HR@10 = {np.mean(hrs_final):.4f}")
        results["encoders"][kind] = {"train_seconds": round(train_s, 1), "k": per_k}
    best = max(((kind, k, v["hr10"]) for kind, r in results["encoders"].items() for k, v in r["k"].items()),
               key=lambda x: x[2], default=None)
    if best:
        results["best"] = {"encoder": best[0], "k": int(best[1]), "hr10": best[2], "vs_popularity": best[2] / popularity}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["encoders"])
    ks = list(next(iter(results["encoders"].values()))["k"]) if kinds else []
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(kinds), 1)
    for i, kind in enumerate(kinds):
        hr = [results["encoders"][kind]["k"][k]["hr10"] for k in ks]
        ax.bar(np.arange(len(ks)) + i * width, hr, width, label=kind)
    ax.axhline(results["global_popularity_hr10"], color="black", linestyle="--", label="global popularity")
    ax.set_xticks(np.arange(len(ks)) + width * (len(kinds) - 1) / 2, [f"k={k}" for k in ks])
    ax.set_ylabel("HR@10")
    ax.set_title("ml-latest-small, streaming segments (80/20 per-user time split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from eventlogs.movielens import default_movielens_dir

    out = Path(args.out)
    results = evaluate(args.data or default_movielens_dir(), out, args.kinds, args.k, args.seeds, epochs=args.epochs,
                       history_share=args.history_share, batch_events=args.batch_events,
                       progress=lambda m: print(m, flush=True, file=sys.stderr))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "hr10.png")
    print(json.dumps(results))
    return 0
