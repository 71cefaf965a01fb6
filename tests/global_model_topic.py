"""The global-model protocol between pipelines at unit level, with a list standing in for the
single-partition model topic (tests/state/test_global_model.py, tests/state/test_global_dbstream.py)."""

from __future__ import annotations

import numpy as np

from eventlogs.synthetic import SyntheticConfig, generate
from state.global_model import GlobalKMeans
from state.quality import adjusted_rand_index
from state.segments import assign
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings


def pipelines(n: int, prefix: str = "i", segments: int = 4, **kw) -> list[Pipeline]:
    out = []
    for i in range(n):
        s = Settings(**{"segments": segments, "warmup_users": 60, "model_update_events": 400, "global_model": True,
                        "instance_id": f"{prefix}{i}", "seed": i, **kw})
        out.append(Pipeline.from_settings(s))
    return out


class Topic:
    """The single-partition model topic: an append-only list every instance reads in order."""

    def __init__(self, partitions: dict[str, list[int]] | None = None) -> None:
        self.log: list[dict] = []
        self.read: dict[str, int] = {}
        self.partitions = partitions or {}  # input partitions each member owns
        self.n = sum(len(p) for p in self.partitions.values()) or None

    def pump(self, seg: GlobalKMeans, leader: bool) -> None:
        pos = self.read.get(seg.instance_id, 0)
        for msg in self.log[pos:]:
            seg.receive(msg)
        self.read[seg.instance_id] = len(self.log)
        self.log.extend(seg.outgoing(leader=leader, partitions=self.partitions.get(seg.instance_id), n_partitions=self.n))

    def announced(self) -> dict[int, dict]:
        out: dict[int, dict] = {}
        for m in self.log:
            if m["kind"] == "model":
                out.setdefault(m["version"], m)  # the first record of a version wins
        return out


def by_id(e: dict, n: int) -> int:
    return int(e["user_id"][1:]) % n


def run(pipes: list[Pipeline], topic: Topic, events: list[dict], batch: int = 200, part=by_id,
         leader=lambda i, step: i == 0) -> list[tuple[str, int, int]]:
    """Users partitioned by ``part`` over the pipelines; ``leader(i, step)`` says who leads. Returns
    (instance, version, changes) per batch that changed segments."""
    parts: list[list[dict]] = [[] for _ in pipes]
    for e in events:
        parts[part(e, len(pipes))].append(e)
    seen = []
    for step, start in enumerate(range(0, max(len(p) for p in parts), batch)):
        for i, p in enumerate(pipes):
            topic.pump(p.segmenter, leader=leader(i, step))
            chunk = parts[i][start:start + batch]
            if chunk:
                r = p.process_objects(chunk)
                if len(r.changes):
                    seen.append((p.segmenter.instance_id, r.changes.model_version, len(r.changes)))
    for _ in range(2):
        for i, p in enumerate(pipes):  # everyone reads the topic to its end
            topic.pump(p.segmenter, leader=False)
    return seen


def final_labels(pipes: list[Pipeline], cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(planted group, segment under the final model, member) of every user held."""
    group = cfg.group_of_users()
    truth, labels, member = [], [], []
    model = pipes[0].segmenter.model
    for i, p in enumerate(pipes):
        rows = p.store.live_rows()
        seg, _ = assign(model, p._embed(rows), np.full(len(rows), -1), 0.0)
        truth += [int(group[int(u[1:])]) for u in p.store.user_ids(rows)]
        labels += seg.tolist()
        member += [i] * len(rows)
    return np.array(truth), np.array(labels), np.array(member)


def mixing(truth: np.ndarray, labels: np.ndarray, member: np.ndarray) -> list[int]:
    """Segments whose planted groups (each over 5% of the segment) live with different members."""
    home = {int(g): set(member[truth == g].tolist()) for g in np.unique(truth)}
    bad = []
    for s in np.unique(labels):
        groups, n = np.unique(truth[labels == s], return_counts=True)
        big = groups[n > 0.05 * n.sum()]
        if len(set().union(*(home[int(g)] for g in big))) > 1:
            bad.append(int(s))
    return bad


def one_instance_ari(cfg: SyntheticConfig, part, n: int, settings: Settings) -> tuple[float, list[float]]:
    """One instance over the whole log in batches of 200 events: ARI of its final model against the planted
    groups, over all users and over the users of each of ``n`` partitions (``part(event, n)``)."""
    p = Pipeline.from_settings(settings)
    events = list(generate(cfg))
    for i in range(0, len(events), 200):
        p.process_objects(events[i:i + 200])
    rows = p.store.live_rows()
    labels, _ = assign(p.model, p._embed(rows), np.full(len(rows), -1), 0.0)
    users = p.store.user_ids(rows)
    group = cfg.group_of_users()
    truth = np.array([int(group[int(u[1:])]) for u in users])
    where = np.array([part({"group": int(g), "user_id": u}, n) for g, u in zip(truth, users)])
    return adjusted_rand_index(truth, labels), [adjusted_rand_index(truth[where == i], labels[where == i])
                                                 for i in range(n)]
