"""The drift detector: silent on a stationary planted log however the model re-labels users, quick on an
abrupt drift; the fit-ratio CUSUM itself on small hand-made cases (no broker anywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from eventlogs.synthetic import SyntheticConfig, generate
from state.segments import SegmentModel
from stream.observability.drift import DriftMonitor
from stream.observability.fit_drift import FitDriftDetector
from stream.observability.metrics import Metrics
from stream.runtime.checkpoints import pack, unpack
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings


def _replay(seed: int, drift: bool, batch: int, grace: int) -> tuple[SyntheticConfig, list[int], list[int], int]:
    """The alerting end-to-end test's logs through the pipeline and the metrics, as ``segstream run`` feeds
    them; returns the config, the event counts at which the distance detector fired, the counts at which
    a model version was published, and the count at which the drift started (0 without one)."""
    cfg = SyntheticConfig(users=1500, groups=4, events=60_000, noise=0.05, seed=seed,
                          drift_at=0.6 if drift else None, drift_groups=4 if drift else 0)
    events = list(generate(cfg))
    settings = Settings(warmup_users=200, batch_max_events=batch, half_life_s=43_200.0, drift_grace_batches=grace)
    pipeline = Pipeline.from_settings(settings, now=lambda: float("inf"))
    metrics = Metrics(drift=DriftMonitor.from_settings(settings))
    fired, versions, drift_at = [], [], 0
    for i in range(0, len(events), batch):
        chunk = events[i: i + batch]
        if drift and not drift_at and chunk[-1]["ts"] >= cfg.drift_ts:
            drift_at = i + next(j for j, e in enumerate(chunk) if e["ts"] >= cfg.drift_ts)
        before = metrics.drift.alarms_total["distance"]
        result = pipeline.process_objects(chunk)
        metrics.observe_batch(result, pipeline, records=len(chunk), value_bytes=0, seconds=0.0)
        if metrics.drift.alarms_total["distance"] > before:
            fired.append(i + len(chunk))
        if result.new_model is not None:
            versions.append(i + len(chunk))
    assert metrics.drift_alarms.labels("distance")._value.get() == len(fired)  # what Prometheus would count
    return cfg, fired, versions, drift_at


# seeds 1 and 8: the former detectors (Page-Hinkley on the assigned distance and on churn) alarmed on
# their stationary logs; 3 is the alerting end-to-end test's; batches of 2,500 give a version every
# other batch (a consumer catching up), with a grace period of the same 10,000 events
CASES = [(1, 500, 20), (3, 500, 20), (8, 500, 20), (0, 2500, 4)]


@pytest.mark.parametrize(("seed", "batch", "grace"), CASES)
def test_no_drift_alarm_on_the_stationary_planted_log(seed: int, batch: int, grace: int) -> None:
    _, fired, versions, _ = _replay(seed, drift=False, batch=batch, grace=grace)
    assert len(versions) >= 10  # the model moved on many times, re-labelling users each time
    assert fired == []


@pytest.mark.parametrize(("seed", "batch", "grace"), CASES)
def test_drift_alarm_soon_after_an_abrupt_drift_and_never_before(seed: int, batch: int, grace: int) -> None:
    _, fired, _, drift_at = _replay(seed, drift=True, batch=batch, grace=grace)
    assert drift_at > 0 and fired, "no drift alarm"
    assert min(fired) > drift_at, "an alarm before the drift"
    # measured: 1,000-1,800 events after the drift in batches of 500; one model version is 5,000 events
    assert min(fired) - drift_at <= 5_000


def _blobs(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return centres[rng.integers(0, 3, n)] + rng.normal(0, 0.7, (n, 2)) + shift


def _model(version: int, centres: np.ndarray, ids: list[int]) -> SegmentModel:
    return SegmentModel(version, centres.astype(np.float32), np.array(ids), 0.0)


def test_new_versions_that_relabel_and_move_centroids_are_no_drift() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    det = FitDriftDetector()
    prev = None
    for v in range(1, 31):  # each version: centroids permuted, nudged, renamed (what a re-fit with new ids does)
        order = rng.permutation(3)
        model = _model(v, centres[order] + rng.normal(0, 0.15, (3, 2)), [3 * v + int(o) for o in order])
        for b in range(5):
            assert not det.observe(_blobs(rng, 400), arrived=prev if b == 0 and prev else model, model=model)
        prev = model
    assert det.detections == 0 and det.score < det.threshold / 2
    assert 0.9 < det.ratio < 1.1


def test_behaviour_moving_off_the_model_alarms_and_moving_closer_does_not() -> None:
    rng = np.random.default_rng(1)
    model = _model(1, np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), [1, 2, 3])
    det = FitDriftDetector()
    for _ in range(10):
        det.observe(_blobs(rng, 400), arrived=model, model=model)
    tight = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])[rng.integers(0, 3, 4000)] + rng.normal(0, 0.2, (4000, 2))
    assert not any(det.observe(tight[i: i + 400], arrived=model, model=model) for i in range(0, 4000, 400))
    assert det.ratio < 0.5 and det.score == 0.0  # users fitting better (more history) is never a drift
    fired = [det.observe(_blobs(rng, 400, shift=1.0), arrived=model, model=model) for _ in range(5)]
    assert any(fired) and det.detections >= 1


def test_the_evidence_is_counted_in_embeddings_not_batches() -> None:
    """A moved population makes the same score in one batch of 1,000 as in ten of 100."""
    rng = np.random.default_rng(2)
    model = _model(1, np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), [1, 2, 3])
    base = _blobs(rng, 1000)
    moved = _blobs(rng, 1000, shift=0.5)
    scores = []
    for size in (1000, 100):
        det = FitDriftDetector(threshold=1e9)
        det.observe(base, arrived=None, model=model)  # the version's baseline
        for i in range(0, 1000, size):
            det.observe(moved[i: i + size], arrived=model, model=model)
        scores.append(det.score)
    assert scores[0] > 0.05
    assert scores[1] == pytest.approx(scores[0], rel=0.05)


def test_the_grace_period_builds_baselines_without_testing() -> None:
    rng = np.random.default_rng(3)
    model = _model(1, np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), [1, 2, 3])
    det = FitDriftDetector()
    det.observe(_blobs(rng, 1000), arrived=None, model=model)
    assert not det.observe(_blobs(rng, 1000, shift=3.0), arrived=model, model=model, test=False)
    assert det.score == 0.0 and det.baseline == det.baseline
    assert det.observe(_blobs(rng, 1000, shift=3.0), arrived=model, model=model)


def test_baseline_and_score_survive_a_checkpoint() -> None:
    rng = np.random.default_rng(4)
    model = _model(7, np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), [1, 2, 3])
    before = DriftMonitor(grace_batches=0)
    for _ in range(4):
        before.observe(distances=np.ones(300), changed=0, updated=300, embeddings=_blobs(rng, 300),
                       model=model, arrived=model)
    before.observe(distances=np.ones(300), changed=0, updated=300, embeddings=_blobs(rng, 300, shift=0.6),
                   model=model, arrived=model)
    assert 0 < before.fit.score < before.fit.threshold
    after = DriftMonitor(grace_batches=0)
    after.load_state(unpack(pack(before.state())))  # the checkpoint codec
    assert after.fit.version == 7 and after.fit.baseline == pytest.approx(before.fit.baseline)
    assert after.fit.score == pytest.approx(before.fit.score)
    moved = _blobs(rng, 300, shift=0.6)
    for m in (before, after):
        m.observe(distances=np.ones(300), changed=0, updated=300, embeddings=moved, model=model, arrived=model)
    assert after.alarms_total == before.alarms_total and after.fit.score == pytest.approx(before.fit.score)


def test_a_checkpoint_of_the_former_detectors_loads_with_a_fresh_baseline() -> None:
    """Written before the fit detector: Page-Hinkley baselines per signal, no ``fit`` entry."""
    rng = np.random.default_rng(5)
    state = DriftMonitor(reference_size=200).state()
    del state["fit"]
    state["baseline"] = {"distance": [0.5] * 10, "churn": [0.01] * 10}
    m = DriftMonitor(reference_size=200, grace_batches=0)
    m.load_state(unpack(pack(state)))
    model = _model(1, np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), [1, 2, 3])
    m.observe(distances=np.ones(1000), changed=0, updated=1000, embeddings=_blobs(rng, 1000), model=model, arrived=None)
    assert m.fit.version == 1 and m.fit.baseline == m.fit.baseline  # the first version seen starts it
    m.observe(distances=np.ones(1000), changed=0, updated=1000, embeddings=_blobs(rng, 1000, shift=3.0),
              model=model, arrived=model)
    assert m.alarms_total["distance"] == 1
