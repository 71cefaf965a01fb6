"""``segstream evaluate movielens``: the harness end to end (tiny data set), and the claim on the real one."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from evaluation.hitrate import hit_rate, split_by_time
from eventlogs.synthetic import SyntheticConfig, generate


def _tiny_movielens(directory, cfg: SyntheticConfig) -> None:
    """A MovieLens-format directory (ratings.csv + movies.csv) from a planted-groups log."""
    directory.mkdir()
    items: dict[str, int] = {}
    with open(directory / "ratings.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        seen = set()
        for ev in generate(cfg):
            uid = int(ev["user_id"][1:]) + 1
            mid = items.setdefault(ev["item_id"], len(items) + 1)
            if (uid, mid) in seen:  # MovieLens: one rating per user and movie
                continue
            seen.add((uid, mid))
            w.writerow([uid, mid, 4.0, int(ev["ts"])])
    with open(directory / "movies.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["movieId", "title", "genres"])
        for mid in items.values():
            w.writerow([mid, f"m{mid}", "Drama"])


def test_split_holds_out_each_users_last_fifth():
    evs = [{"user_id": u, "item_id": i, "ts": 100 - i} for u in ("a", "b") for i in range(10)]
    s = split_by_time(evs)
    assert s.heldout == {"a": {0, 1}, "b": {0, 1}}  # the two newest ratings of each
    assert all(e["item_id"] >= 2 for e in s.history)
    assert [e["ts"] for e in s.history] == sorted(e["ts"] for e in s.history)


def test_segments_matching_tastes_beat_global_popularity():
    # two tastes: users 0-9 rate items 0-29, users 10-19 items 100-129, one more of their own taste held out
    evs = []
    for u in range(20):
        base = 0 if u < 10 else 100
        own = [base + (u * 3 + j) % 30 for j in range(8)]
        evs += [{"user_id": u, "item_id": i, "ts": t} for t, i in enumerate(own)]
    s = split_by_time(evs, history_share=0.75)
    by_taste = {str(u): int(u >= 10) for u in range(20)}
    assert hit_rate(by_taste, s) > hit_rate({}, s)


def test_evaluate_command_writes_json_and_plot(tmp_path):
    data = tmp_path / "ml"
    _tiny_movielens(data, SyntheticConfig(users=120, groups=3, events=4000, seed=2, items_per_group=40, shared_items=20))
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "evaluate", "movielens", "--data", str(data), "--out", str(out),
         "--kinds", "raw", "item-pool", "--k", "3", "--epochs", "3", "--batch-events", "200"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    stored = json.loads((out / "results.json").read_text())
    assert printed == stored
    assert stored["protocol"]["users"] == 120 and stored["protocol"]["history_share"] == 0.8
    for kind in ("raw", "item-pool"):
        r = stored["encoders"][kind]["k"]["3"]
        assert 0.0 <= r["hr10"] <= 1.0 and -1.0 <= r["silhouette"] <= 1.0
    assert (out / "encoder-item-pool.pt").is_file()
    assert (out / "hr10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch 3/3" in proc.stderr  # training progress is shown


@pytest.mark.slow
def test_item_encoder_segments_beat_raw_and_popularity_on_movielens(movielens_dir, tmp_path):
    """The documented claim, one seed at k=8 (docs/encoders-and-evaluation.md has k = 8, 16, 32 over three seeds)."""
    from evaluation.movielens import evaluate

    r = evaluate(str(movielens_dir), tmp_path, ["raw", "item-pool"], [8], [0], progress=lambda m: None)
    item, raw = r["encoders"]["item-pool"]["k"]["8"]["hr10"], r["encoders"]["raw"]["k"]["8"]["hr10"]
    assert item >= 0.44, r
    assert item > raw and item > r["global_popularity_hr10"], r
