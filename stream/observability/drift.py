"""Drift and segment-health signals, updated once per micro-batch with numpy.

:class:`DriftMonitor` turns what a processed batch tells (distances of the
updated users to their assigned centroid, how many of them changed segment,
their embeddings, the model version they arrived to and the one after) into the
health signals exported as metrics:

* **churn**: share of updated users whose segment changed in this batch (the caller leaves
  first assignments out: a new user is not churn). A gauge only: labels follow the model, so
  churn jumps at every model version even when behaviour does not change;
* **mean distance** to the assigned centroid (a gauge only, for the same reason);
* **fit ratio** and the **distance alarm**: the batch's mean distance to the nearest centroid of
  the version it arrived to, over that version's own baseline, watched by a one-sided CUSUM
  (:class:`stream.observability.fit_drift.FitDriftDetector`, which says why and how). It is fed
  once the first ``grace_batches`` batches after seeding (the model's own convergence) are past;
  baselines are built from the start;
* **centroid shift**: mean Euclidean move of the centroids of segments present
  in both the previous and the new model version;
* **PSI** (population stability index) of the embedding distribution (the last ``current_size``
  embeddings) against a reference window, averaged over dimensions, with decile bins of the
  reference. The reference is the first ``reference_size`` embeddings after the grace period, and
  every ``refresh_every`` embeddings after that it is replaced by the current window: PSI then says
  how far the population moved since the last refresh, and a slow seasonal change does not pin it
  high for ever (``refresh_every=0`` keeps the first window). The reference goes into checkpoints
  (:meth:`DriftMonitor.state`), so a restart does not learn it again from post-restart traffic.
  Every embedding held (the reference while it fills, the current window) is tagged with its user's
  key (``state.user_store.user_keys``): :meth:`DriftMonitor.forget` drops an erased user's rows. A
  reference once set is kept only as bin edges and shares, aggregates of the whole window;
* a **PSI alarm** (off unless ``psi_alarm`` > 0; 0.25 is the usual mark of a significant shift)
  when PSI crosses ``psi_alarm`` from below. Off in ``segstream run``: on a stationary log the
  state embeddings still move as users accumulate history, and a fixed PSI threshold fired there.

A detection counts once and holds the in-alarm gauge up for ``alarm_hold_batches`` batches
(re-armed by every new detection).

Detectors are fed one value per batch (a batch summary), so the cost per batch
is O(1) Python work plus vectorised numpy over the batch.

    >>> import numpy as np
    >>> from state.segments import SegmentModel
    >>> model = SegmentModel(1, np.zeros((2, 4), np.float32), np.array([1, 2]), 0.0)
    >>> m = DriftMonitor(reference_size=200, alarm_hold_batches=3, baseline_embeddings=200)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(30):
    ...     s = m.observe(distances=rng.normal(1.0, 0.05, 100), changed=1, updated=100,
    ...                   embeddings=rng.normal(0, 1, (100, 4)), model=model, arrived=model)
    >>> m.alarms_total["distance"], round(m.psi, 2) < 0.1
    (0, True)
    >>> for _ in range(10):
    ...     s = m.observe(distances=rng.normal(3.0, 0.05, 100), changed=1, updated=100,
    ...                   embeddings=rng.normal(2, 1, (100, 4)), model=model, arrived=model)
    >>> m.alarms_total["distance"] >= 1, m.psi > 0.25, m.fit.ratio > 1.5
    (True, True, True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.observability.fit_drift import FitDriftDetector

if TYPE_CHECKING:
    from state.segments import SegmentModel
    from stream.settings import Settings

__all__ = ["DriftMonitor", "DriftSnapshot", "population_stability_index", "centroid_shift", "SIGNALS"]

log = logging.getLogger(__name__)

SIGNALS = ("distance", "psi")  # "distance": the fit-ratio CUSUM; "psi": a threshold, off unless set


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """[bins-1, d] inner bin edges: the quantiles of each column of ``reference``."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    return np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1], axis=0)


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = 10,
                                edges: np.ndarray | None = None) -> float:
    """Mean PSI over columns, with quantile bins taken from ``reference`` ([n, d] arrays).

    >>> rng = np.random.default_rng(1)
    >>> ref = rng.normal(0, 1, (5000, 2))
    >>> population_stability_index(ref, rng.normal(0, 1, (5000, 2))) < 0.02
    True
    >>> population_stability_index(ref, rng.normal(1, 1, (5000, 2))) > 0.25
    True
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cur = np.asarray(current, dtype=np.float64).reshape(len(current), -1)
    if len(ref) == 0 or len(cur) == 0:
        return 0.0
    if edges is None:
        edges = quantile_edges(ref, bins)
    return _psi(_shares(ref, edges), _shares(cur, edges))


def _shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[d, bins] share of ``x``'s values per column in each bin (one bincount over (column, bin))."""
    d, bins = x.shape[1], edges.shape[0] + 1
    idx = (x[:, None, :] > edges[None, :, :]).sum(axis=1)  # [n, d] in 0..bins-1
    flat = idx + np.arange(d)[None, :] * bins
    return np.bincount(flat.ravel(), minlength=d * bins).reshape(d, bins) / len(x)


def _psi(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(((q - p) * np.log(q / p)).sum(axis=1).mean())


def centroid_shift(old_ids: np.ndarray, old_c: np.ndarray, new_ids: np.ndarray, new_c: np.ndarray) -> float:
    """Mean Euclidean distance moved by centroids whose segment id is in both models (0 if none).

    >>> centroid_shift(np.array([1, 2]), np.zeros((2, 2)), np.array([2, 3]), np.array([[3., 4.], [9., 9.]]))
    5.0
    """
    common, i_old, i_new = np.intersect1d(old_ids, new_ids, return_indices=True)
    if len(common) == 0:
        return 0.0
    return float(np.linalg.norm(new_c[i_new] - old_c[i_old], axis=1).mean())


@dataclass
class DriftSnapshot:
    churn: float
    mean_distance: float
    psi: float
    fit_ratio: float
    fit_score: float
    detections: dict[str, bool]
    in_alarm: dict[str, bool]


class DriftMonitor:
    @classmethod
    def from_settings(cls, settings: Settings) -> DriftMonitor:
        """The monitor ``segstream run`` uses (``SEGSTREAM_PSI_WINDOW``, ``SEGSTREAM_DRIFT_*``)."""
        return cls(reference_size=settings.psi_window, current_size=settings.psi_window,
                   alarm_hold_batches=settings.drift_hold_batches, delta=settings.drift_delta,
                   threshold=settings.drift_threshold, grace_batches=settings.drift_grace_batches,
                   baseline_embeddings=settings.drift_baseline_embeddings,
                   refresh_every=settings.psi_refresh_embeddings)

    def __init__(self, *, reference_size: int = 2000, current_size: int = 2000, alarm_hold_batches: int = 20,
                 delta: float = 0.05, threshold: float = 0.1, baseline_embeddings: int = 1000,
                 grace_batches: int = 0, refresh_every: int = 0, psi_alarm: float = 0.0) -> None:
        self.grace_batches = grace_batches
        self.psi_alarm = psi_alarm
        self.batches = 0
        self.reference_size = reference_size
        self.current_size = current_size
        self.refresh_every = refresh_every
        self.refreshes = 0  # times the reference was replaced by the current window
        self._since_reference = 0  # embeddings seen since the reference was set
        self.alarm_hold_batches = alarm_hold_batches
        self.fit = FitDriftDetector(delta=delta, threshold=threshold, baseline_embeddings=baseline_embeddings)
        self.alarms_total = {s: 0 for s in SIGNALS}
        self._hold = {s: 0 for s in SIGNALS}
        self._reference: list[np.ndarray] = []
        self._reference_keys: list[np.ndarray] = []  # user key of each row of _reference (0: unknown)
        self._ref_n = 0
        self._ref_shares: np.ndarray | None = None  # reference window's shares per bin, fixed once full
        self._current: list[np.ndarray] = []
        self._current_keys: list[np.ndarray] = []
        self.psi = 0.0
        self.churn = 0.0
        self.mean_distance = float("nan")
        self.last_shift = 0.0

    def in_alarm(self, signal: str) -> bool:
        return self._hold[signal] > 0

    def observe(self, *, distances: np.ndarray, changed: int, updated: int,
                embeddings: np.ndarray | None = None, embedding_keys: np.ndarray | None = None,
                model: SegmentModel | None = None, arrived: SegmentModel | None = None) -> DriftSnapshot:
        """Fold one batch in; returns the batch's signals and which detectors fired
        (``embedding_keys``: each embedding's user key, so that :meth:`forget` can find it; ``arrived``:
        the model version in use when the batch came, ``model``: the one after it, the same object
        unless the batch brought a new version)."""
        self.batches += 1
        d = np.asarray(distances, dtype=np.float64)
        d = d[np.isfinite(d)]
        if len(d):
            self.mean_distance = float(d.mean())
        if updated > 0:
            self.churn = changed / updated
        detections = {}
        self._hold["distance"] = max(0, self._hold["distance"] - 1)
        detections["distance"] = embeddings is not None and self.fit.observe(
            embeddings, arrived=arrived, model=model, test=self.batches > self.grace_batches)
        if detections["distance"]:
            self.alarms_total["distance"] += 1
            self._hold["distance"] = self.alarm_hold_batches
        if embeddings is not None and len(embeddings) and self.batches > self.grace_batches:
            keys = (np.zeros(len(embeddings), np.uint64) if embedding_keys is None
                    else np.asarray(embedding_keys, dtype=np.uint64))
            before = self.psi
            self._observe_embeddings(np.asarray(embeddings, dtype=np.float64), keys)
            detections["psi"] = 0.0 < self.psi_alarm and before < self.psi_alarm <= self.psi
        else:
            detections["psi"] = False
        self._hold["psi"] = max(0, self._hold["psi"] - 1)
        if detections["psi"]:
            self.alarms_total["psi"] += 1
            self._hold["psi"] = self.alarm_hold_batches
        return DriftSnapshot(self.churn, self.mean_distance, self.psi, self.fit.ratio, self.fit.score, detections,
                             {s: self.in_alarm(s) for s in SIGNALS})

    def forget(self, keys: np.ndarray) -> int:
        """Erasure: drop the embeddings of these users (by user key) from the reference still filling
        and from the current window; returns how many rows went. PSI is recomputed at the next batch."""
        gone = 0
        for rows, tags in ((self._reference, self._reference_keys), (self._current, self._current_keys)):
            for i, k in enumerate(tags):
                hit = np.isin(k, keys)
                if hit.any():
                    gone += int(hit.sum())
                    rows[i], tags[i] = rows[i][~hit], k[~hit]
        self._ref_n = sum(len(x) for x in self._reference)
        return gone

    def _observe_embeddings(self, emb: np.ndarray, keys: np.ndarray) -> None:
        held = self._edges if self._ref_shares is not None else (self._reference[0] if self._reference else emb)
        if held.shape[1] != emb.shape[1]:  # a restored reference of another encoder
            log.warning("embedding width changed (%d -> %d): the PSI reference starts again",
                        held.shape[1], emb.shape[1])
            self._ref_shares, self._reference, self._ref_n, self._current = None, [], 0, []
            self._reference_keys, self._current_keys = [], []
        if self._ref_shares is None:
            self._reference.append(emb)
            self._reference_keys.append(keys)
            self._ref_n += len(emb)
            if self._ref_n >= self.reference_size:
                self._set_reference(np.concatenate(self._reference)[: self.reference_size])
                self._reference, self._reference_keys = [], []
            return
        self._current.append(emb)
        self._current_keys.append(keys)
        cur = np.concatenate(self._current)[-self.current_size:]
        self._current = [cur]
        self._current_keys = [np.concatenate(self._current_keys)[-self.current_size:]]
        self._since_reference += len(emb)
        if self.refresh_every and self._since_reference >= self.refresh_every and len(cur) >= self.reference_size:
            self._set_reference(cur[-self.reference_size:])
            self.refreshes += 1
        self.psi = _psi(self._ref_shares, _shares(cur, self._edges))

    def _set_reference(self, ref: np.ndarray) -> None:
        self._edges = quantile_edges(ref)
        self._ref_shares = _shares(ref, self._edges)
        self._since_reference = 0

    # ----- checkpoints ---------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a restart needs so as not to learn the reference again: the PSI reference (bin edges and
        shares, or the embeddings gathered so far while it fills), the batch count (the grace period is
        not served twice) and the fit detector (its version's baseline and its score). The current
        window (up to ``current_size`` embeddings) is left out, to keep checkpoints small: it fills
        again within a few batches."""
        filling = np.concatenate(self._reference).astype(np.float32) if self._reference else None
        filling_keys = np.concatenate(self._reference_keys) if self._reference else None
        return {"batches": self.batches, "fit": self.fit.state(),
                "edges": None if self._ref_shares is None else self._edges,
                "shares": self._ref_shares, "filling": filling, "filling_keys": filling_keys,
                "since_reference": self._since_reference, "refreshes": self.refreshes, "psi": self.psi}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Take over :meth:`state` of an earlier run (None, as in checkpoints written before it: nothing)."""
        if not state:
            return
        self.batches = int(state["batches"])
        self.fit.load_state(state.get("fit"))  # absent in checkpoints of the earlier detectors: a fresh baseline
        if state["shares"] is not None:
            self._edges = np.asarray(state["edges"], dtype=np.float64)
            self._ref_shares = np.asarray(state["shares"], dtype=np.float64)
            self._reference, self._reference_keys, self._ref_n = [], [], 0
        else:
            filling = state["filling"]
            self._ref_shares = None
            self._reference = [] if filling is None else [np.asarray(filling, dtype=np.float64)]
            keys = state.get("filling_keys")  # absent in checkpoints written before rows were tagged: unknown
            self._reference_keys = [] if filling is None else [
                np.zeros(len(filling), np.uint64) if keys is None else np.asarray(keys, dtype=np.uint64)]
            self._ref_n = sum(len(x) for x in self._reference)
        self._current, self._current_keys = [], []
        self._since_reference = int(state["since_reference"])
        self.refreshes = int(state["refreshes"])
        self.psi = float(state["psi"])

    def model_changed(self, old_ids: np.ndarray, old_c: np.ndarray, new_ids: np.ndarray, new_c: np.ndarray) -> float:
        self.last_shift = centroid_shift(old_ids, old_c, new_ids, new_c)
        return self.last_shift
