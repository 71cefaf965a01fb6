"""Figure tables of the evaluations (``segstream evaluate``: planted, movielens, select), rendered into the
docs by :mod:`bench.report`."""

from __future__ import annotations

from typing import Any

from bench.tables import Results, slash, table

__all__ = ["planted_table", "movielens_table", "selection_table", "MOVIELENS_GOALS"]


def _planted_command(c: dict[str, Any]) -> str:
    """The `segstream evaluate planted` flags that give this configuration (its defaults left out)."""
    args = []
    for flag, value, default in (("--users", c["users"], 20000), ("--groups", c["groups"], 8),
                                 ("--events", c["events"], 600_000), ("--days", c["duration_s"] / 86400, 14.0),
                                 ("--clusterer", c["clusterer"], "kmeans"), ("--batch", c["batch"], 5000),
                                 ("--seed", c["seed"], 0)):
        if value != default:
            args.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if not c["drift_at"]:
        args.append("--drift-at 0")
    else:
        if c["drift_at"] != 0.5:
            args.append(f"--drift-at {c['drift_at']:g}")
        if c["drift_groups"] != 3:
            args.append(f"--drift-groups {c['drift_groups']}")
    for flag, value, default in (("--half-life-s", c["half_life_s"], 86400.0), ("--hysteresis", c["hysteresis"], 0.05),
                                 ("--dwell-s", c["dwell_s"], 0.0)):
        if value != default:
            args.append(f"{flag} {value:g}")
    return "`" + " ".join(["segstream evaluate planted", *args]) + "`"


def planted_table(results: Results) -> str:
    """One row per `segstream evaluate planted` run: online k-means against batch k-means and the planted groups."""
    rows = []
    for r in results:
        c, s, pts = r["config"], r["summary"], r["points"]
        drift = (f"{c['drift_groups']} of {c['groups']} groups drift at {c['drift_at']:.0%} of the span"
                 if c["drift_at"] else "stationary")
        run = (f"{c['users']:,} users, {c['events']:,} events, {drift}, half-life {c['half_life_s'] / 86400:g} d, "
               f"hysteresis {c['hysteresis']:g}")
        moves = sorted(q["moves_per_10k"] * 100 for q in pts[2:])
        median = moves[len(moves) // 2]
        end = pts[-1]
        if s.get("pre_drift_ari") is not None:
            rec = s["recovery_half_lives"]
            after = (f"{s['pre_drift_ari']:.3f} → lowest {s['min_ari_after_drift']:.3f}; back to 0.9× after "
                     + ("never" if rec is None else f"{rec:.2f} half-lives"))
        else:
            after = "—"
        rows.append((run, f"{s['ari_mean']:.3f}", f"{s['batch_ari_mean']:.3f}", f"{s['ari_ratio']:.2f}",
                     f"{end['ari']:.3f} / {end['batch_ari']:.3f}", f"median {median:.2f}%, max {max(moves):.2f}%",
                     f"{s['min_share_min']:.1%}", after, _planted_command(c)))
    return table(("Run", "online ARI (mean after warm-up, before any drift)", "batch k-means ARI", "ratio",
                   "end of run: online / batch ARI", "users changing segment per 10k events (after warm-up)",
                   "smallest segment (share of users)", "drift: ARI before → after", "Command"), rows)


_KIND_NAMES = {"raw": "none (raw state)"}
#: the goals of the default path on the held-out part (mean HR@10 over seeds, x global popularity)
MOVIELENS_GOALS = {"8": 1.18, "32": 1.25}


def movielens_table(results: Results) -> str:
    """HR@10 of the streamed segments per encoder and k, against the batch reference (`segstream evaluate movielens`)."""
    r = results[0]
    pr, enc, ref = r["protocol"], r["encoders"], r["reference"]
    ks = [str(k) for k in pr["k"]]
    default = pr["default_kind"]
    cmd = ["segstream evaluate movielens"]
    if pr["seeds"] != [0, 1, 2]:
        cmd += ["--seeds", *map(str, pr["seeds"])]
    if ks != ["8", "16", "32"]:
        cmd += ["--k", *ks]
    per_k = "(k = " + " / ".join(ks) + ")"
    head = ("Segments from", *(f"held-out HR@10 k={k}" for k in ks), f"× global popularity {per_k}",
            "held-out HR@10 per seed (k = " + "; ".join(ks) + ")", f"validation HR@10 {per_k}",
            f"held-out, every user re-assigned to the final model {per_k}", f"silhouette, final model {per_k}")

    def hr_cells(h: dict[str, Any], v: dict[str, Any], per_seed: bool = True) -> tuple[str, ...]:
        """Held-out HR@10 per k, × global popularity, per seed (blank for a figure without seeds), validation."""
        seeds = "; ".join(", ".join(f"{x:.3f}" for x in h[k]["hr10_per_seed"]) for k in ks) if per_seed else ""
        return (*(f"{h[k]['hr10']:.3f}" for k in ks), slash([h[k]["vs_popularity"] for k in ks], ".2f"), seeds,
                slash([v[k]["hr10"] for k in ks]))

    rows = []
    for kind, e in enc.items():
        h = e["heldout"]
        name = _KIND_NAMES.get(kind, f"`{kind}`") + (" (**default**)" if kind == default else "")
        rows.append((name, *hr_cells(h, e["validation"]), slash([h[k]["hr10_final_model"] for k in ks]),
                     slash([h[k]["silhouette"] for k in ks], ".2f")))
    chosen = ref["chosen"]
    rows.append((f"batch reference: k-means on SVD embeddings (`{chosen}`)",
                 *hr_cells(ref["heldout"][chosen], ref["validation"][chosen]), "", ""))
    act = r.get("activity_only")
    if act:
        rows.append(("k groups of users by when they were last active, nothing else",
                     *hr_cells(act["heldout"], act["validation"], per_seed=False), "", ""))
    pop = r["popularity"]
    rows.append(("global popularity (one segment)", f"{pop['heldout']:.3f}", *[""] * (len(ks) - 1), "", "",
                 f"{pop['validation']:.3f}", "", ""))
    d = r["default"]["heldout"]
    beats = [k for k in ks if d[k]["beats_reference"]]
    goals = "; ".join(f"k = {k}: {d[k]['vs_popularity']:.3f}× (goal ≥ {g}×, {'met' if d[k]['vs_popularity'] >= g else '**not met**'})"
                      for k, g in MOVIELENS_GOALS.items() if k in d)
    others = [x for x in REFERENCE_NAMES if x != chosen and x in ref["validation"]]
    note = (f"\n\n{pr['users']:,} users, {pr['history_ratings']:,} history ratings ({pr['validation_ratings']:,} of them the "
            f"validation target), {pr['heldout_ratings']:,} held out. `segstream run`'s defaults: micro-batches of "
            f"{pr['batch_events']:,} events, `{pr['clusterer']}`, warm-up {pr['warmup_users']} users, hysteresis "
            f"{pr['hysteresis']}; encoders trained with `segstream train-encoder`'s defaults for their kind. HR@10 is the "
            f"mean over seeds {', '.join(map(str, pr['seeds']))}. Default path (`{default}`) against global popularity: "
            f"{goals}. "
            + (f"It beats the batch reference at every k ({', '.join(ks)})" if len(beats) == len(ks) else
               f"It does **not** beat the batch reference at any k ({', '.join(ks)})" if not beats else
               f"It beats the batch reference at k = {', '.join(beats)}, **not** at k = "
               f"{', '.join(k for k in ks if k not in beats)}")
            + ". " + _uncertainty_note(d, ks) + _training_seed_note(r["default"], default, ks, pr["default_train_config"].get("seed", 0))
            + "Reference variant chosen on validation"
            + (f" (validation HR@10 of `{others[0]}`: {slash([ref['validation'][others[0]][k]['hr10'] for k in ks])})"
               if others else "") + f". Run time {r['seconds'] / 60:.0f} min.")
    return table(head, rows) + note + f" Command: `{' '.join(cmd)}`." + _by_last_activity(r["default"], default, ks)


_QUARTILES = ("least recently active quarter", "second quarter", "third quarter", "most recently active quarter")


def _by_last_activity(default: dict[str, Any], kind: str, ks: list[str]) -> str:
    """Held-out HR@10 of the default path and of the reference per quarter of users by last activity."""
    by = default.get("by_last_activity")
    if not by:
        return ""
    head = ("Users, by the time of their last history rating", "users", "global popularity",
            *(f"k={k}: default / reference" for k in ks))
    rows = [(name, str(by["users"][g]), f"{by['popularity'][g]:.3f}",
             *(f"{by['k'][k]['default'][g]:.3f} / {by['k'][k]['reference'][g]:.3f}" for k in ks))
            for g, name in enumerate(_QUARTILES)]
    return (f"\n\nThe same held-out HR@10 (mean over the seeds) within each quarter of the users, ordered by when "
            f"they were last active in the history: where the default path (`{kind}`, held labels) gains on the batch "
            f"reference and where it loses.\n\n" + table(head, rows))


REFERENCE_NAMES = ("svd32-l2", "svd32")


def _uncertainty_note(d: dict[str, Any], ks: list[str]) -> str:
    """How far the choice of users alone moves the default's figures (``paired_uncertainty``); empty in older runs."""
    u = {k: d[k]["uncertainty"] for k in ks if "uncertainty" in d[k]}
    if not u:
        return ""
    first = next(iter(u.values()))
    ci = "; ".join(f"k = {k}: {x['vs_popularity_ci95'][0]:.2f}–{x['vs_popularity_ci95'][1]:.2f}×" for k, x in u.items())
    diff = "; ".join(f"k = {k}: {x['minus_reference']:+.3f} ± {x['minus_reference_se']:.3f}" for k, x in u.items())
    return (f"How far the choice of the {first['users']:,} users alone moves these figures: 95% interval of the "
            f"default's × global popularity (users drawn with replacement, {first['resamples']:,} times) {ci}; default "
            f"minus reference, held-out HR@10 with its paired standard error over users, {diff}. ")


def _training_seed_note(default: dict[str, Any], kind: str, ks: list[str], seed: int) -> str:
    """The default path with the encoder trained from other seeds (``--spread-seeds``); empty without them."""
    again = default.get("training_seeds") or []
    if not again:
        return ""
    figures = "; ".join(f"seed {a['seed']}: {slash([a['heldout'][k]['vs_popularity'] for k in ks], '.2f')}×" for a in again)
    return (f"With `{kind}` trained from other seeds (the table's: {seed}), the default path gives, against global "
            f"popularity (k = {' / '.join(ks)}), {figures}: the spread the encoder's own training seed gives "
            f"(those runs choose nothing). ")


def _spread_note(chosen: dict[str, Any]) -> str:
    """The chosen candidate's score with other training seeds of its encoder (``--spread-seeds``)."""
    again = chosen.get("training_seeds") or []
    if not again:
        return ""
    seeds = ", ".join(str(a["seed"]) for a in again)
    scores = ", ".join(f"{a['score']:.4f}" for a in again)
    return (f"The same candidate trained with training seed {seeds} (the table's: "
            f"{chosen['train_config'].get('seed', 0)}) scores {scores}: the spread the encoder's own training seed "
            f"gives. ")


def selection_table(results: Results) -> str:
    """Candidates scored on the validation split (`segstream evaluate select`), the chosen one in bold."""
    r = results[0]
    pr = r["protocol"]
    ks = [str(k) for k in pr["k"]]
    per_k = "(k = " + " / ".join(ks) + ")"
    rows = []
    for c in r["candidates"]:
        v = c["validation"]
        settings = ", ".join(f"{k}={val}" for k, val in c["settings"].items()) or "its defaults"
        mark = "**" if c["number"] == r["chosen"]["number"] else ""
        rows.append((str(c["number"]), f"`{c['kind']}`", settings, slash([v[k]["hr10"] for k in ks]),
                     slash([v[k]["hr10_final_model"] for k in ks]), f"{mark}{c['score']:.4f}{mark}",
                     f"{c['train_seconds']:.0f} s"))
    note = (f"\n\nValidation: each user's last {pr['validation_share']:.0%} of history; global popularity HR@10 there "
            f"{r['popularity_hr10']:.3f}. Each figure is the mean over seeds {', '.join(map(str, pr['seeds']))}; "
            f"score = {pr['score']}. Chosen: candidate {r['chosen']['number']} (`{r['chosen']['kind']}`). "
            + _spread_note(r["chosen"]) + "Command: `segstream evaluate select`.")
    return table(("#", "Kind", "Settings", f"HR@10, held labels {per_k}", f"HR@10, final-model labels {per_k}",
                   "Score", "Training"), rows) + note
