"""Convert a MovieLens directory (ratings.csv + movies.csv) into a recorded event log.

Each rating becomes ``{"user_id", "action": "rate", "ts", "item_id", "categories", "value"}``
with the movie's genres as categories, sorted by time (ties by user, then movie),
so that replays are deterministic. The MovieLens licence travels with the data:
the converted file stays outside the repository.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from typing import Any

from eventlogs.recorded import write_events

__all__ = ["iter_movielens_events", "import_movielens", "default_movielens_dir"]

NO_GENRES = "(no genres listed)"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_movielens_dir() -> str:
    """Where ml-latest-small lives: ``$SEGSTREAM_MOVIELENS``, else ``../shared/data/ml-latest-small``.

    The relative path is taken from the repository root (which also works from a
    git worktree next to ``shared/``), then from the working directory.
    """
    env = os.environ.get("SEGSTREAM_MOVIELENS")
    if env:
        return env
    for base in (_REPO, os.getcwd()):
        cand = os.path.join(os.path.dirname(base), "shared", "data", "ml-latest-small")
        if os.path.isfile(os.path.join(cand, "ratings.csv")):
            return cand
    return os.path.join(os.path.dirname(_REPO), "shared", "data", "ml-latest-small")


def _genres(movies_csv: str) -> dict[int, list[str]]:
    genres: dict[int, list[str]] = {}
    with open(movies_csv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            gs = [g for g in row["genres"].split("|") if g and g != NO_GENRES]
            genres[int(row["movieId"])] = gs
    return genres


def iter_movielens_events(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    directory = os.fspath(directory)
    ratings_csv = os.path.join(directory, "ratings.csv")
    movies_csv = os.path.join(directory, "movies.csv")
    for p in (ratings_csv, movies_csv):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: not found (expected a MovieLens directory with ratings.csv and movies.csv)")
    genres = _genres(movies_csv)
    rows: list[tuple[int, int, int, float]] = []
    with open(ratings_csv, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append((int(r["timestamp"]), int(r["userId"]), int(r["movieId"]), float(r["rating"])))
    rows.sort()
    for ts, user, movie, rating in rows:
        ev: dict[str, Any] = {"user_id": user, "action": "rate", "ts": ts, "item_id": movie, "value": rating}
        cats = genres.get(movie)
        if cats:
            ev["categories"] = cats
        yield ev


def import_movielens(directory: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    return write_events(out, iter_movielens_events(directory))
