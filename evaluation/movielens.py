"""``segstream evaluate movielens``: HR@10 of streaming segments on ml-latest-small, through the default path.

Protocol (see :mod:`evaluation.hitrate`): each user's first 80% of ratings by
time are *history*, the rest *held out*. Each user's last 10% of history is cut
off again as the *validation* target (:func:`validation_split`); everything a
person chose (the encoders' defaults, :mod:`evaluation.selection`; the batch
reference's variant, here) was chosen on it, and the held-out part is read
only to report.

For each encoder and each phase (``validation``: trained and replayed on the
first 90% of history, scored on the last 10%; ``heldout``: trained and
replayed on the whole history, scored on the held-out part) the encoder is
trained with ``segstream train-encoder``'s defaults for its kind
(:meth:`~encoders.train.TrainConfig.for_kind`) and the log is replayed through
the consumer's :class:`~stream.runtime.pipeline.Pipeline` with
``segstream run``'s defaults (:class:`~stream.settings.Settings`: micro-batch
size, clusterer, warm-up, hysteresis...), changing only the number of segments
and the seed. A user's segment is the one they hold at the end of the stream
(what a recommender reading ``user-segments`` knows); recommendations are the
10 items most rated in that segment's history that the user has not rated.

The **batch reference** is computed on the same history: truncated SVD
(``sklearn.decomposition.TruncatedSVD``, 32 components) of the binary
user x item matrix, each user's factors L2-normalised or not (chosen on
validation), then ``sklearn.cluster.KMeans`` (k-means++, 10 restarts) with the
same k and seeds. It sees every user's whole history at once; the streaming
path sees each user's state as the consumer keeps it.

A second baseline, ``activity_only``, splits the users into k equal groups by the time of their last
history rating and nothing else: how much of a segmentation's lift on this log comes from when users
were active (the log spans 1996 to 2018) rather than from what they like.

The default kind is also trained again with other training seeds (``--spread-seeds``) and its
held-out figures reported beside the headline: how far the encoder's own seed moves them (those
runs never choose anything).

Writes ``results.json`` and ``hr10.png``; ``python -m bench.report`` renders
the table in docs/encoders.md from the committed JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "main", "evaluate", "validation_split", "replay_segments", "batch_reference",
           "REFERENCE_VARIANTS", "KINDS"]

#: encoders compared (``raw``: no encoder, the normalised state itself)
KINDS = ("raw", "state-ae", "item-pool", "item-seq", "item-gru")
#: batch-reference variants (name -> L2-normalise each user's SVD factors); the one used on the
#: held-out part is the better on validation
REFERENCE_VARIANTS = {"svd32-l2": True, "svd32": False}
PHASES = ("validation", "heldout")

Progress = Callable[[str], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from eventlogs.movielens import default_movielens_dir

    p.add_argument("--data", default=None, help=f"MovieLens directory (default: {default_movielens_dir()})")
    p.add_argument("--out", default="runs/eval-movielens", help="directory for results.json, hr10.png and artifacts")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), help="encoders to compare (raw = no encoder)")
    p.add_argument("--k", nargs="+", type=int, default=[8, 16, 32], help="numbers of segments")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="pipeline seeds (each reported; HR@10 is their mean)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: each kind's default)")
    p.add_argument("--history-share", type=float, default=0.8)
    p.add_argument("--validation-share", type=float, default=0.1, help="share of each user's history cut off for validation")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--batch-events", type=int, default=None,
                   help="micro-batch size of the replay (default: segstream run's, SEGSTREAM_BATCH_MAX_EVENTS)")
    p.add_argument("--spread-seeds", nargs="*", type=int, default=[1, 2],
                   help="training seeds the default kind is trained again with on the held-out phase: how far the "
                        "encoder's own seed moves its figures (never chooses; none: an empty list)")


def validation_split(history: Sequence[dict[str, Any]], share: float = 0.1):  # -> Split
    """Each user's last ``share`` of history (at least one event) as the validation target.

    >>> evs = [{"user_id": "a", "item_id": i, "ts": i} for i in range(10)]
    >>> v = validation_split(evs)
    >>> len(v.history), v.heldout["a"]
    (9, {9})
    """
    from evaluation.hitrate import split_by_time

    return split_by_time(history, 1.0 - share)


def _train(kind: str, log: Path, path: Path, epochs: int | None, progress: Progress, seed: int | None = None) -> Path:
    from encoders.train import TrainConfig, train_encoder

    cfg = TrainConfig.for_kind(kind)
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    train_encoder(log, path, cfg, progress=progress)
    return path


def run_settings(k: int, seed: int, encoder: Path | None, *, batch_events: int | None = None, warmup_users: int | None = None):
    """``segstream run``'s settings (every default), with ``k`` segments, ``seed`` and ``encoder``."""
    from stream.settings import Settings

    base = Settings()
    return base.replace(segments=k, seed=seed, encoder=str(encoder) if encoder else "", encoder_device="cpu",
                        metrics_port=0, batch_max_events=batch_events or base.batch_max_events,
                        warmup_users=max(k, warmup_users or base.warmup_users))


def replay_segments(log: Path, settings) -> dict[str, Any]:  # noqa: ANN001
    """Segments after a streaming replay of ``log`` with ``settings``.

    ``held``: the segment each user holds at the end (what a recommender reading
    ``user-segments`` knows); ``final``: every user re-assigned to the final
    model's nearest centroid. Silhouettes of both on the final embeddings.
    """
    from sklearn.metrics import silhouette_score

    from state.segments import squared_distances
    from stream.runtime.pipeline import Pipeline
    from stream.runtime.replay import replay_log

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


def batch_reference(split, k: int, seed: int, *, normalise: bool = True, dim: int = 32) -> dict[str, int]:  # noqa: ANN001
    """Batch k-means on truncated-SVD embeddings of the binary user x item history matrix: user -> cluster."""
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    users = split.users
    items = sorted(set().union(*(split.history_items[u] for u in users)))
    col = {item: j for j, item in enumerate(items)}
    pairs = [(r, col[i]) for r, u in enumerate(users) for i in split.history_items[u]]
    rows, cols = np.array(pairs, dtype=np.int64).T
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items)))
    z = TruncatedSVD(min(dim, len(items) - 1), random_state=seed).fit_transform(x)
    if normalise:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    labels = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
    return dict(zip(users, labels.tolist()))


def _summary(hrs: list[float], popularity: float) -> dict[str, Any]:
    return {"hr10": float(np.mean(hrs)), "hr10_per_seed": hrs, "vs_popularity": float(np.mean(hrs)) / popularity}


def evaluate(data: str, out: Path, kinds: list[str], ks: list[int], seeds: list[int], *, epochs: int | None = None,
             history_share: float = 0.8, validation_share: float = 0.1, phases: Sequence[str] = PHASES,
             batch_events: int | None = None, spread_seeds: Sequence[int] = (),
             progress: Progress = print) -> dict[str, Any]:
    from encoders.train import DEFAULT_KIND, TrainConfig
    from eventlogs.movielens import iter_movielens_events
    from eventlogs.recorded import write_events
    from evaluation.hitrate import (hit_rate, last_activity_groups, mean_by_group, paired_uncertainty, split_by_time,
                                    user_hits)

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    test = split_by_time(iter_movielens_events(data), history_share)
    splits = {"heldout": test, "validation": validation_split(test.history, validation_share)}
    logs: dict[str, Path] = {}
    for phase in phases:
        logs[phase] = out / f"{phase}-history.msgpack"
        write_events(logs[phase], splits[phase].history)
    n_heldout = sum(len(v) for v in test.heldout.values())
    n_val = sum(len(v) for v in splits["validation"].heldout.values())
    progress(f"{len(test.users)} users: {len(test.history):,} history ratings ({n_val:,} of them the validation target), "
             f"{n_heldout:,} held out")
    settings = run_settings(ks[0], seeds[0], None, batch_events=batch_events)
    warmup = min(settings.warmup_users, len(test.users) // 2)  # the consumer's default, unless the data set is tiny
    # each user's hit (users in split.users order): per phase for global popularity, and per seed (rows) for the
    # segmentations the default is compared with, (phase, kind or reference variant, k); HR@10 is their mean
    popularity_hits = {phase: np.array(user_hits({}, splits[phase]), np.float64) for phase in phases}
    popularity = {phase: float(h.mean()) for phase, h in popularity_hits.items()}
    progress("global popularity HR@10: " + ", ".join(f"{p} {v:.4f}" for p, v in popularity.items()))
    results: dict[str, Any] = {
        "protocol": {"data": os.path.basename(os.path.normpath(data)), "history_share": history_share,
                     "validation_share": validation_share, "phases": list(phases),
                     "users": len(test.users), "history_ratings": len(test.history), "heldout_ratings": n_heldout,
                     "validation_ratings": n_val, "n": 10, "k": ks, "seeds": seeds,
                     "batch_events": settings.batch_max_events, "clusterer": settings.clusterer,
                     "warmup_users": warmup, "hysteresis": settings.hysteresis, "epochs": epochs,
                     "default_kind": DEFAULT_KIND, "default_train_config": asdict(TrainConfig.for_kind(DEFAULT_KIND))},
        "popularity": popularity, "encoders": {}, "reference": {},
    }
    if "heldout" in popularity:
        results["global_popularity_hr10"] = popularity["heldout"]

    hits_of: dict[tuple[str, str, int], np.ndarray] = {}

    def scored(phase: str, name: str, k: int, labels: list[dict[str, int]]) -> list[float]:
        """HR@10 of each seed's labels; their per-user hits are kept in ``hits_of``."""
        hits = np.array([user_hits(x, splits[phase]) for x in labels], np.float64)
        hits_of[(phase, name, k)] = hits
        return hits.mean(axis=1).tolist()

    def replays(phase: str, encoder: Path | None, k: int) -> list[dict[str, Any]]:
        """The log of ``phase`` streamed through ``segstream run``'s defaults with k segments, once per seed."""
        return [replay_segments(logs[phase], run_settings(k, seed, encoder, batch_events=batch_events, warmup_users=warmup))
                for seed in seeds]

    # the batch reference: its variant chosen on validation
    variants = list(REFERENCE_VARIANTS)
    for phase in phases:
        if phase == "heldout" and "validation" in results["reference"]:
            val = results["reference"]["validation"]
            variants = [max(val, key=lambda v: np.mean([val[v][str(k)]["hr10"] for k in ks]))]
        per_variant: dict[str, Any] = {}
        for variant in variants:
            per_k = {}
            for k in ks:
                hrs = scored(phase, variant, k, [batch_reference(splits[phase], k, seed, normalise=REFERENCE_VARIANTS[variant])
                                                 for seed in seeds])
                per_k[str(k)] = _summary(hrs, popularity[phase])
                progress(f"[{phase}] reference {variant:>9} k={k:<3} HR@10 = {np.mean(hrs):.4f} "
                         f"(per seed {', '.join(f'{h:.3f}' for h in hrs)})")
            per_variant[variant] = per_k
        results["reference"][phase] = per_variant
    results["reference"]["chosen"] = variants[0]
    # how much of a segmentation's lift comes from *when* users were active rather than what they like:
    # k equal groups of users by the time of their last history rating, nothing else (no seeds: deterministic)
    results["activity_only"] = {phase: {str(k): _summary([hit_rate(last_activity_groups(splits[phase], k), splits[phase])],
                                                         popularity[phase]) for k in ks} for phase in phases}

    for kind in kinds:
        entry: dict[str, Any] = {"train_seconds": {}}
        for phase in phases:
            t = time.perf_counter()
            encoder = None if kind == "raw" else _train(
                kind, logs[phase], out / f"encoder-{kind}-{phase}.pt", epochs,
                lambda m, kind=kind, phase=phase: progress(f"  [{phase} {kind}] {m}"))
            entry["train_seconds"][phase] = round(time.perf_counter() - t, 1)
            per_k: dict[str, Any] = {}
            for k in ks:
                runs = replays(phase, encoder, k)
                hrs = scored(phase, kind, k, [r["held"] for r in runs])
                hrs_final = [hit_rate(r["final"], splits[phase]) for r in runs]
                per_k[str(k)] = {
                    **_summary(hrs, popularity[phase]),
                    "hr10_final_model": float(np.mean(hrs_final)), "hr10_final_model_per_seed": hrs_final,
                    "silhouette": float(np.nanmean([r["silhouette_final"] for r in runs])),
                    "silhouette_held": float(np.nanmean([r["silhouette_held"] for r in runs])),
                    "segments_held": [len(set(r["held"].values())) for r in runs],
                }
                progress(f"[{phase}] {kind:>9}  k={k:<3} HR@10 = {np.mean(hrs):.4f} "
                         f"(per seed {', '.join(f'{h:.3f}' for h in hrs)}) = {np.mean(hrs) / popularity[phase]:.3f}x "
                         f"popularity | final-model re-assignment {np.mean(hrs_final):.4f}")
            entry[phase] = per_k
        results["encoders"][kind] = entry

    if DEFAULT_KIND in results["encoders"]:
        ref = results["reference"]
        d: dict[str, Any] = {"encoder": DEFAULT_KIND}
        for phase in phases:
            mine, theirs = results["encoders"][DEFAULT_KIND][phase], ref[phase][ref["chosen"]]
            d[phase] = {str(k): {"hr10": mine[str(k)]["hr10"], "vs_popularity": mine[str(k)]["vs_popularity"],
                                 "reference_hr10": theirs[str(k)]["hr10"],
                                 "beats_reference": mine[str(k)]["hr10"] > theirs[str(k)]["hr10"],
                                 # how far the choice of users alone moves these comparisons
                                 "uncertainty": paired_uncertainty(
                                     hits_of[(phase, DEFAULT_KIND, k)].mean(axis=0),
                                     hits_of[(phase, ref["chosen"], k)].mean(axis=0), popularity_hits[phase])}
                        for k in ks}
        results["default"] = d
        if "heldout" in phases:
            # who the default serves better or worse than the reference: users by when they were last active
            group_of = last_activity_groups(test, 4)
            quartile = np.array([group_of[u] for u in test.users])  # the order of every hits row

            def by_group(hits: np.ndarray) -> list[float]:  # per quartile, mean over users and seeds
                return mean_by_group(hits.mean(axis=0), quartile, 4)

            d["by_last_activity"] = {
                "users": np.bincount(quartile, minlength=4).tolist(),
                "popularity": by_group(popularity_hits["heldout"][None, :]),
                "k": {str(k): {"default": by_group(hits_of[("heldout", DEFAULT_KIND, k)]),
                               "reference": by_group(hits_of[("heldout", ref["chosen"], k)])} for k in ks}}
            # the encoder's own training seed moves the figures too: the default kind trained again with other
            # seeds says how much (these runs never choose anything, and the headline stays the default's seed)
            d["training_seeds"] = []
            for train_seed in spread_seeds:
                encoder = _train(DEFAULT_KIND, logs["heldout"], out / f"encoder-{DEFAULT_KIND}-heldout-seed-{train_seed}.pt",
                                 epochs, lambda m, t=train_seed: progress(f"  [heldout {DEFAULT_KIND} seed {t}] {m}"),
                                 seed=train_seed)
                per_k = {}
                for k in ks:
                    hrs = [hit_rate(r["held"], test) for r in replays("heldout", encoder, k)]
                    per_k[str(k)] = _summary(hrs, popularity["heldout"])
                    progress(f"[heldout] {DEFAULT_KIND} trained with seed {train_seed}, k={k:<3} HR@10 = {np.mean(hrs):.4f} "
                             f"= {np.mean(hrs) / popularity['heldout']:.3f}x popularity")
                d["training_seeds"].append({"seed": train_seed, "heldout": per_k})
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = results["protocol"]["phases"]
    ks = [str(k) for k in results["protocol"]["k"]]
    ref = results["reference"]
    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        bars = {kind: [e[phase][k]["hr10"] for k in ks] for kind, e in results["encoders"].items()}
        bars[f"batch reference ({ref['chosen']})"] = [ref[phase][ref["chosen"]][k]["hr10"] for k in ks]
        width = 0.8 / max(len(bars), 1)
        for i, (name, hr) in enumerate(bars.items()):
            label = name + (" (default)" if name == results["protocol"]["default_kind"] else "")
            ax.bar(np.arange(len(ks)) + i * width, hr, width, label=label)
        ax.axhline(results["popularity"][phase], color="black", linestyle="--", label="global popularity")
        ax.set_xticks(np.arange(len(ks)) + width * (len(bars) - 1) / 2, [f"k={k}" for k in ks])
        ax.set_ylabel("HR@10")
        ax.set_title(f"{results['protocol']['data']}: {phase}", fontsize=10)
        ax.set_ylim(0, 1.35 * max(max(hr) for hr in bars.values()))  # room for the legend above the bars
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from eventlogs.movielens import default_movielens_dir

    out = Path(args.out)
    results = evaluate(args.data or default_movielens_dir(), out, args.kinds, args.k, args.seeds, epochs=args.epochs,
                       history_share=args.history_share, validation_share=args.validation_share, phases=args.phases,
                       batch_events=args.batch_events, spread_seeds=args.spread_seeds,
                       progress=lambda m: print(m, flush=True, file=sys.stderr))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "hr10.png")
    print(json.dumps(results))
    return 0
