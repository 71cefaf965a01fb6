"""Planted-groups evaluation: online segments vs the truth and vs batch k-means, with abrupt drift.

``segstream evaluate planted`` generates a log with ``--groups`` planted user
groups (:mod:`eventlogs.synthetic`); half-way through event time
``--drift-groups`` of them switch to new interests. The log is replayed
through the same :class:`~stream.runtime.pipeline.Pipeline` as ``segstream run``
and, every ``--checkpoint-events`` events, the harness records:

- ``ari`` / ``nmi``: online segments of the users seen so far vs their planted group;
- ``batch_ari`` / ``batch_nmi``: ``sklearn.cluster.KMeans`` (k-means++, ``n_init`` restarts)
  on the *same* embeddings at the same moment (the reference);
- ``silhouette``: of the online labels, on a seeded sample;
- ``sizes``: users per segment id;
- ``moves_per_10k``: share of users who changed an existing segment, per 10,000 events.

The summary gives ``ari_ratio`` (mean online ARI / mean batch ARI over the
checkpoints after warm-up), the pre-drift ARI, and how many half-lives of
event time after the drift the ARI takes to return to 0.9 x its pre-drift
value. JSON goes to ``--out``/planted.json, plots to planted.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from eventlogs.synthetic import SyntheticConfig, generate
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings

__all__ = ["add_arguments", "main", "run_planted", "summarise"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--events", type=int, default=600_000)
    p.add_argument("--drift-groups", type=int, default=3, help="groups that change interests at --drift-at")
    p.add_argument("--drift-at", type=float, default=0.5, help="fraction of the event-time span (0: no drift)")
    p.add_argument("--days", type=float, default=14.0, help="event-time span of the log")
    p.add_argument("--half-life-s", type=float, default=86400.0, help="per-user state half-life (event time)")
    p.add_argument("--clusterer", default="kmeans", choices=("kmeans", "dbstream"))
    p.add_argument("--hysteresis", type=float, default=0.05, help="relative margin before a user moves")
    p.add_argument("--dwell-s", type=float, default=0.0, help="event time a user keeps a new segment at least")
    p.add_argument("--batch", type=int, default=5000, help="micro-batch size (events)")
    p.add_argument("--checkpoint-events", type=int, default=20000)
    p.add_argument("--encoder", default="", help="encoder artifact (default: raw normalised state)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="eval-out/planted")


def run_planted(cfg: SyntheticConfig, settings: Settings, *, batch: int = 5000, checkpoint_events: int = 20000,
                n_init: int = 4, silhouette_sample: int = 2000) -> dict[str, Any]:
    """Replay the planted log; figures at every checkpoint (see the module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    truth_of_user = cfg.group_of_users()
    events = list(generate(cfg))
    p = Pipeline.from_settings(settings)
    rng = np.random.default_rng([cfg.seed, 99])
    points: list[dict[str, Any]] = []
    moves = since = 0
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        res = p.process_objects(chunk)
        moves += int((res.changes.previous >= 0).sum())
        since += len(chunk)
        if since < checkpoint_events and i + batch < len(events):
            continue
        rows = p.store.live_rows()
        seg = p.store.segment[rows]
        rows, seg = rows[seg >= 0], seg[seg >= 0]
        if len(rows) < 2 * settings.segments:
            since = moves = 0
            continue
        truth = truth_of_user[np.array([int(u[1:]) for u in p.store.user_ids(rows)])]
        emb = p.encoder.encode(p.store.features(rows))
        k = settings.segments
        batch_labels = KMeans(k, n_init=n_init, random_state=cfg.seed).fit_predict(emb)
        sample = rng.choice(len(rows), min(silhouette_sample, len(rows)), replace=False)
        sil = (float(silhouette_score(emb[sample], seg[sample])) if len(np.unique(seg[sample])) > 1 else float("nan"))
        ids, counts = np.unique(seg, return_counts=True)
        points.append({
            "events": i + len(chunk), "event_time": float(chunk[-1]["ts"]), "users": int(len(rows)),
            "model_version": p.model.version if p.model else 0,
            "ari": float(adjusted_rand_score(truth, seg)), "nmi": float(normalized_mutual_info_score(truth, seg)),
            "batch_ari": float(adjusted_rand_score(truth, batch_labels)),
            "batch_nmi": float(normalized_mutual_info_score(truth, batch_labels)),
            "silhouette": sil, "sizes": {str(int(s)): int(c) for s, c in zip(ids, counts)},
            "min_share": float(counts.min() / len(rows)) if len(ids) >= k else 0.0,
            "moves_per_10k": float(moves / len(rows) * 10000 / since),
        })
        since = moves = 0
    return {"config": {**{k: getattr(cfg, k) for k in ("users", "groups", "events", "drift_at", "drift_groups", "seed",
                                                       "duration_s")},
                       "clusterer": settings.clusterer, "half_life_s": p.store.spec.half_life_s, "batch": batch,
                       "learn_sample": settings.learn_sample, "hysteresis": settings.hysteresis,
                       "dwell_s": settings.dwell_s},
            "drift_ts": cfg.drift_ts, "start_ts": cfg.start_ts, "points": points,
            "summary": summarise(points, cfg.drift_ts, p.store.spec.half_life_s, warmup_points=1)}


def summarise(points: list[dict[str, Any]], drift_ts: float | None, half_life_s: float, *,
              warmup_points: int = 1) -> dict[str, Any]:
    """Headline figures of a run (``ari_ratio`` over checkpoints before the drift, after warm-up)."""
    pre = [q for q in points[warmup_points:] if drift_ts is None or q["event_time"] < drift_ts]
    out: dict[str, Any] = {}
    if pre:
        out["ari_mean"] = float(np.mean([q["ari"] for q in pre]))
        out["batch_ari_mean"] = float(np.mean([q["batch_ari"] for q in pre]))
        out["ari_ratio"] = out["ari_mean"] / max(out["batch_ari_mean"], 1e-12)
        out["nmi_mean"] = float(np.mean([q["nmi"] for q in pre]))
        out["moves_per_10k_max"] = float(max(q["moves_per_10k"] for q in pre[1:] or pre))
        out["min_share_min"] = float(min(q["min_share"] for q in pre))
    if drift_ts is not None and pre:
        pre_ari = pre[-1]["ari"]
        out["pre_drift_ari"] = pre_ari
        after = [q for q in points if q["event_time"] >= drift_ts]
        back = next((q for q in after if q["ari"] >= 0.9 * pre_ari), None)
        out["recovery_half_lives"] = None if back is None else (back["event_time"] - drift_ts) / half_life_s
        out["min_ari_after_drift"] = float(min(q["ari"] for q in after)) if after else None
    return out


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report["points"]
    days = [(q["event_time"] - report["start_ts"]) / 86400 for q in pts]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    ax[0].plot(days, [q["ari"] for q in pts], label="online ARI")
    ax[0].plot(days, [q["batch_ari"] for q in pts], "--", label="batch k-means ARI")
    ax[0].plot(days, [q["nmi"] for q in pts], label="online NMI")
    ax[0].plot(days, [q["silhouette"] for q in pts], ":", label="silhouette")
    ids = sorted({s for q in pts for s in q["sizes"]}, key=int)
    for s in ids:
        ax[1].plot(days, [q["sizes"].get(s, 0) for q in pts], label=f"seg {s}")
    ax[2].plot(days, [q["moves_per_10k"] * 100 for q in pts])
    for a in ax:
        if report["drift_ts"] is not None:
            a.axvline((report["drift_ts"] - report["start_ts"]) / 86400, color="grey", lw=0.8)
        a.set_xlabel("event time (days)")
    ax[0].set_title("agreement with planted groups")
    ax[0].legend(fontsize=7)
    ax[1].set_title("users per segment id")
    ax[1].legend(fontsize=6, ncol=2)
    ax[2].set_title("% of users changing segment per 10k events")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    cfg = SyntheticConfig(users=args.users, groups=args.groups, events=args.events, seed=args.seed,
                          duration_s=args.days * 86400.0, drift_at=args.drift_at or None,
                          drift_groups=args.drift_groups if args.drift_at else 0)
    settings = Settings(segments=args.groups, clusterer=args.clusterer, half_life_s=args.half_life_s,
                        encoder=args.encoder, max_users=max(2 * args.users, 1000), metrics_port=0, seed=args.seed,
                        warmup_users=max(200, 10 * args.groups), hysteresis=args.hysteresis, dwell_s=args.dwell_s)
    report = run_planted(cfg, settings, batch=args.batch, checkpoint_events=args.checkpoint_events)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "planted.json").write_text(json.dumps(report, indent=1))
    _plot(report, out / "planted.png")
    print(json.dumps(report["summary"], indent=1))
    return 0
