"""Drift as a loss of fit: how far recent embeddings lie from the model version they were judged by,
relative to how far they lay when that version was applied.

Why not the assigned distance or the share of users changing segment: segment labels follow the
model (users are re-labelled whenever a version moves the centroids), so both jump at each version
on a log that does not drift at all. What this detector watches does not depend on labels:

* **signal**: each batch's mean Euclidean distance from its embeddings to the *nearest* centroid of
  the model version the batch arrived to (before any version it publishes);
* **baseline** of a version: the same mean over the first ``baseline_embeddings`` embeddings judged
  by that version, starting with the batch that brought it (the model's own within-segment spread
  on the traffic it was fitted to). A version change therefore re-baselines the signal, so a new
  version is never itself a drift, and the signal needs no scale of its own (encoders differ);
* **ratio** = signal / baseline of that version: about 1 while the traffic stays what the model was
  fitted to; it rises as behaviour moves away from every centroid;
* **detector**: a one-sided CUSUM on the ratio, weighted by the batch's embeddings in thousands,
  ``score = max(0, score + (ratio - 1 - delta) * n / 1000)``; a detection when ``score > threshold``,
  after which the score restarts at 0. ``delta`` (0.05) is the tolerated relative rise; ``threshold``
  (0.1) the excess rise times thousands of embeddings that makes an alarm: e.g. a 15 % rise over
  1,000 embeddings, or a 25 % rise over 500. Weighting by embeddings rather than counting batches
  makes the alarm independent of the batch size: a consumer catching up in large batches (a model
  version per batch, which re-fits a moved population within one or two batches) sees the same
  evidence as one fed small batches. A version change keeps the score (the ratio is already relative
  to the version), so a drift across quick successive versions still adds up, while a model that has
  re-fitted the moved population brings the ratio back to 1 and the score back down.

A ratio below 1 (users gaining history, embeddings tightening around the centroids) never alarms.

    >>> import numpy as np
    >>> from state.segments import SegmentModel
    >>> rng = np.random.default_rng(0)
    >>> m1 = SegmentModel(1, np.array([[0.0, 0.0], [5.0, 5.0]], np.float32), np.array([1, 2]), 0.0)
    >>> det = FitDriftDetector(baseline_embeddings=200)
    >>> blobs = lambda shift: np.concatenate([rng.normal(0, 0.5, (100, 2)), rng.normal(5, 0.5, (100, 2))]) + shift
    >>> [det.observe(blobs(0.0), arrived=m1, model=m1) for _ in range(20)].count(True)
    0
    >>> m2 = SegmentModel(2, m1.centroids[::-1] + 0.2, np.array([7, 8]), 0.0)  # new ids, moved centroids
    >>> [det.observe(blobs(0.0), arrived=a, model=m2) for a in [m1] + [m2] * 19].count(True)
    0
    >>> fired = [det.observe(blobs(1.5), arrived=m2, model=m2) for _ in range(5)]  # behaviour moves off it
    >>> any(fired), round(det.ratio, 1) > 1.5
    (True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from state.segments import SegmentModel, squared_distances

__all__ = ["FitDriftDetector", "nearest_distances"]


def nearest_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[n] Euclidean distance of each row of ``x`` to its nearest centroid."""
    return np.sqrt(squared_distances(np.asarray(x), np.asarray(centroids)).min(axis=1))


class FitDriftDetector:
    def __init__(self, *, delta: float = 0.05, threshold: float = 0.1, baseline_embeddings: int = 1000) -> None:
        self.delta = delta
        self.threshold = threshold
        self.baseline_embeddings = baseline_embeddings
        self.version: int | None = None  # the model version the baseline belongs to
        self._base_sum = 0.0
        self._base_n = 0
        self.baseline = float("nan")  # set once the version's first baseline_embeddings were judged
        self.ratio = float("nan")  # of the last batch tested
        self.score = 0.0  # the CUSUM statistic
        self.detections = 0

    def observe(self, embeddings: np.ndarray, *, arrived: SegmentModel | None, model: SegmentModel | None,
                test: bool = True) -> bool:
        """Judge one batch's embeddings by ``arrived`` (the version in use when the batch came) and start the
        baseline of ``model`` (the version after it) when that is new; ``test=False`` (the grace period)
        builds baselines without testing. Returns whether this batch made a detection."""
        x = np.asarray(embeddings, dtype=np.float32)
        if len(x) == 0:
            return False
        fired = False
        if arrived is not None and arrived.version == self.version and arrived.k:
            d = nearest_distances(x, arrived.centroids)
            if self.baseline == self.baseline:  # not NaN: the version has its baseline
                if test:
                    fired = self._test(float(d.mean()), len(d))
            elif model is arrived or (model is not None and model.version == arrived.version):
                self._base_sum += float(d.sum())
                self._base_n += len(d)
                if self._base_n >= self.baseline_embeddings:
                    self.baseline = max(self._base_sum / self._base_n, 1e-12)
        if model is not None and model.version != self.version and model.k:
            self._start(model, x)
        return fired

    def _test(self, mean_distance: float, n: int) -> bool:
        self.ratio = mean_distance / self.baseline
        self.score = max(0.0, self.score + (self.ratio - 1.0 - self.delta) * n / 1000.0)
        if self.score > self.threshold:
            self.detections += 1
            self.score = 0.0
            return True
        return False

    def _start(self, model: SegmentModel, x: np.ndarray) -> None:
        """A new version: its baseline starts with this batch, judged by it (what it was fitted on)."""
        d = nearest_distances(x, model.centroids)
        self.version = model.version
        self._base_sum, self._base_n = float(d.sum()), len(d)
        self.baseline = max(self._base_sum / self._base_n, 1e-12) if self._base_n >= self.baseline_embeddings \
            else float("nan")

    # ----- checkpoints ---------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": self.version, "base_sum": self._base_sum, "base_n": self._base_n,
                "baseline": self.baseline, "score": self.score}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Take over :meth:`state` of an earlier run (None: nothing, as in checkpoints written before it)."""
        if not state:
            return
        self.version = None if state["version"] is None else int(state["version"])
        self._base_sum, self._base_n = float(state["base_sum"]), int(state["base_n"])
        self.baseline = float(state["baseline"])
        self.score = float(state["score"])
