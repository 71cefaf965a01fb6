"""``segstream evaluate select``: choose the default encoder and its hyperparameters on validation only.

Reads ml-latest-small, keeps each user's first 80% of ratings by time (the
history of ``segstream evaluate movielens``; the held-out 20% is dropped here
before anything else) and cuts each user's last 10% of that history off as the
validation target. Every candidate of :data:`CANDIDATES` is trained on the
rest with ``segstream train-encoder``'s code, replayed through the consumer
with ``segstream run``'s defaults for each k and seed, and scored by
segment-popularity HR@10 on the validation target, twice: with the segments
users hold at the end of the stream, and with every user re-assigned to the
final model's nearest centre (what labels that follow the model give; a
segment a user got from an older model also says *when* they were active,
which the second score leaves out). The score is the mean of both over all k
and seeds, and the chosen candidate the one with the highest score; its kind
becomes
:data:`encoders.train.DEFAULT_KIND` and its settings that kind's defaults
(:meth:`encoders.train.TrainConfig.for_kind`), by hand, and
``tests/evaluation/test_movielens_eval.py`` checks that they agree with the
committed ``docs/bench/select-movielens.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "main", "select", "CANDIDATES"]

#: (kind, settings) searched; settings override the kind's defaults of the commit that introduced the
#: search (state-ae and item-pool: as they were; item-seq: 32-d, 64 recent items, 5 epochs, lr 0.01)
CANDIDATES: list[tuple[str, dict[str, Any]]] = [
    ("state-ae", {}),
    ("item-pool", {}),
    ("item-seq", {"attention": "salience+recency", "window": 10}),
    ("item-seq", {"attention": "salience", "window": 10}),
    ("item-seq", {"attention": "uniform", "window": 10}),
    ("item-seq", {"attention": "uniform", "window": 1}),
    ("item-seq", {"attention": "uniform", "window": 30}),
    ("item-seq", {"attention": "uniform", "window": 10, "item_history": 32}),
    ("item-seq", {"attention": "uniform", "window": 10, "item_history": 128}),
    ("item-seq", {"attention": "uniform", "window": 10, "dim": 16}),
    ("item-seq", {"attention": "uniform", "window": 10, "dim": 64}),
    ("item-seq", {"attention": "uniform", "window": 10, "epochs": 10}),
    ("item-seq", {"attention": "uniform", "window": 3}),
    # the item vectors: the log's co-occurrence SVD (the batch reference's, restricted to the recent items)
    # instead of, or beside, the next-window ones
    ("item-seq", {"attention": "uniform", "window": 10, "table": "co-occurrence"}),
    ("item-seq", {"attention": "uniform", "window": 10, "table": "both"}),
    # a recurrent sequence encoder on the same base and target: a GRU over the recent items in time order
    ("item-gru", {"window": 10, "readout": "last"}),
    ("item-gru", {"window": 10, "readout": "mean"}),
]
#: the base every item-seq and item-gru candidate starts from (fixed, so that the search does not move
#: when the chosen defaults are written into TrainConfig.for_kind)
SEQ_BASE: dict[str, Any] = {"dim": 32, "epochs": 5, "batch_size": 512, "lr": 1e-2, "item_history": 64}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from eventlogs.movielens import default_movielens_dir

    p.add_argument("--data", default=None, help=f"MovieLens directory (default: {default_movielens_dir()})")
    p.add_argument("--out", default="runs/select-movielens", help="directory for select.json and the artifacts")
    p.add_argument("--k", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--only", nargs="+", type=int, default=None, help="candidate numbers to run (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each candidate's)")
    p.add_argument("--history-share", type=float, default=0.8)
    p.add_argument("--validation-share", type=float, default=0.1)
    p.add_argument("--spread-seeds", nargs="*", type=int, default=[1, 2],
                   help="training seeds the chosen candidate is trained again with (the spread of its score; none: an empty list)")


def _config(kind: str, settings: dict[str, Any], epochs: int | None):  # -> TrainConfig
    from encoders.train import NEXT_WINDOW_KINDS, TrainConfig

    base = {**SEQ_BASE} if kind in NEXT_WINDOW_KINDS else {}
    over = {**base, **settings, **({"epochs": epochs} if epochs is not None else {})}
    return TrainConfig.for_kind(kind, **over)


def select(data: str, out: Path, ks: list[int], seeds: list[int], *, only: list[int] | None = None,
           epochs: int | None = None, history_share: float = 0.8, validation_share: float = 0.1,
           spread_seeds: list[int] = (), progress=print) -> dict[str, Any]:  # noqa: ANN001
    from encoders.train import TrainConfig, train_encoder
    from eventlogs.movielens import iter_movielens_events
    from eventlogs.recorded import write_events
    from evaluation.hitrate import hit_rate, split_by_time
    from evaluation.movielens import replay_segments, run_settings, validation_split

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    history = split_by_time(iter_movielens_events(data), history_share).history  # the held-out part goes here
    val = validation_split(history, validation_share)
    log = out / "validation-history.msgpack"
    write_events(log, val.history)
    popularity = hit_rate({}, val)
    warmup = min(run_settings(ks[0], 0, None).warmup_users, len(val.users) // 2)
    progress(f"{len(val.users)} users: {len(val.history):,} ratings to train and replay, "
             f"{sum(map(len, val.heldout.values())):,} validation targets; popularity HR@10 {popularity:.4f}")
    results: dict[str, Any] = {
        "protocol": {"data": Path(data).name, "history_share": history_share, "validation_share": validation_share,
                     "k": ks, "seeds": seeds, "batch_events": run_settings(ks[0], 0, None).batch_max_events,
                     "warmup_users": warmup,
                     "score": "mean HR@10 over k and seeds, of held and of final-model labels"},
        "popularity_hr10": popularity, "candidates": [],
    }
    def scored(i: int, kind: str, cfg, name: str) -> tuple[dict[str, Any], float, float]:  # noqa: ANN001
        """Train ``cfg``, replay for every k and seed: (validation figures per k, score, training seconds)."""
        t = time.perf_counter()
        path = out / f"{name}.pt"
        train_encoder(log, path, cfg, progress=lambda m: progress(f"  [{i} {kind}] {m}"))
        train_s = time.perf_counter() - t
        per_k = {}
        for k in ks:
            runs = [replay_segments(log, run_settings(k, seed, path, warmup_users=warmup)) for seed in seeds]
            held = [hit_rate(r["held"], val) for r in runs]
            final = [hit_rate(r["final"], val) for r in runs]
            per_k[str(k)] = {"hr10": float(np.mean(held)), "hr10_per_seed": held,
                             "hr10_final_model": float(np.mean(final)), "hr10_final_model_per_seed": final}
        score = float(np.mean([v["hr10"] for v in per_k.values()] + [v["hr10_final_model"] for v in per_k.values()]))
        by_k = ", ".join(f"k={k} {v['hr10']:.4f} / {v['hr10_final_model']:.4f}" for k, v in per_k.items())
        progress(f"[{i}] {kind} {name}: score {score:.4f} (held / final-model labels: {by_k}), trained in {train_s:.0f}s")
        return per_k, score, train_s

    for i, (kind, settings) in enumerate(CANDIDATES):
        if only is not None and i not in only:
            continue
        cfg = _config(kind, settings, epochs)
        per_k, score, train_s = scored(i, kind, cfg, f"candidate-{i}")
        results["candidates"].append({"number": i, "kind": kind, "settings": settings, "train_config": asdict(cfg),
                                      "validation": per_k, "score": score, "train_seconds": round(train_s, 1)})
    if results["candidates"]:
        best = max(results["candidates"], key=lambda c: c["score"])
        results["chosen"] = {"number": best["number"], "kind": best["kind"], "train_config": best["train_config"],
                             "score": best["score"]}
        # the encoder's own training seed moves the score too: the chosen candidate trained again with other
        # seeds says how much of its lead over the others that alone could explain (these never choose)
        spread = []
        for s in spread_seeds:
            cfg = replace(TrainConfig(**best["train_config"]), seed=s)
            per_k, score, _ = scored(best["number"], best["kind"], cfg, f"candidate-{best['number']}-seed-{s}")
            spread.append({"seed": s, "score": score, "validation": per_k})
        results["chosen"]["training_seeds"] = spread
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def main(args: argparse.Namespace) -> int:
    from eventlogs.movielens import default_movielens_dir

    out = Path(args.out)
    results = select(args.data or default_movielens_dir(), out, args.k, args.seeds, only=args.only, epochs=args.epochs,
                     history_share=args.history_share, validation_share=args.validation_share,
                     spread_seeds=args.spread_seeds, progress=lambda m: print(m, flush=True, file=sys.stderr))
    (out / "select.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0
