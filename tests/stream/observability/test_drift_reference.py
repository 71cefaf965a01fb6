"""The PSI reference lives: refreshed every ``refresh_every`` embeddings, and carried through a checkpoint."""

from __future__ import annotations

import numpy as np

from stream.observability.drift import DriftMonitor
from stream.runtime.checkpoints import pack, unpack


def _feed(m: DriftMonitor, rng: np.random.Generator, mean: float, batches: int, n: int = 200) -> None:
    for _ in range(batches):
        m.observe(distances=rng.normal(1.0, 0.05, n), changed=1, updated=n, embeddings=rng.normal(mean, 1, (n, 4)))


def test_a_refreshed_reference_forgets_an_old_shift_a_frozen_one_does_not() -> None:
    frozen = DriftMonitor(reference_size=1000, current_size=1000)
    living = DriftMonitor(reference_size=1000, current_size=1000, refresh_every=4000)
    for m, seed in ((frozen, 1), (living, 1)):
        rng = np.random.default_rng(seed)
        _feed(m, rng, 0.0, 10)  # reference filled, then stable
        _feed(m, rng, 1.5, 10)  # the population moves
        assert m.psi > 0.25
        _feed(m, rng, 1.5, 30)  # and stays moved
    assert frozen.psi > 0.25 and frozen.refreshes == 0
    assert living.psi < 0.1 and living.refreshes >= 1  # the new normal became the reference


def test_the_reference_survives_a_checkpoint_round_trip() -> None:
    rng = np.random.default_rng(2)
    before = DriftMonitor(reference_size=1000, current_size=1000, refresh_every=50_000, grace_batches=3)
    _feed(before, rng, 0.0, 12)
    state = unpack(pack(before.state()))  # the checkpoint codec: msgpack, numpy arrays as an extension
    after = DriftMonitor(reference_size=1000, current_size=1000, refresh_every=50_000, grace_batches=3)
    after.load_state(state)
    fresh = DriftMonitor(reference_size=1000, current_size=1000, refresh_every=50_000, grace_batches=3)
    shifted = np.random.default_rng(3).normal(2.0, 1, (1000, 4))
    for m in (before, after, fresh):
        m.observe(distances=np.ones(1000), changed=0, updated=1000, embeddings=shifted)
    assert after.batches == before.batches  # no second grace period
    assert after.psi > 0.25 and abs(after.psi - before.psi) < 0.05  # judged against the old reference
    assert fresh.psi == 0.0  # without it the shifted traffic would become the reference itself


def test_a_reference_still_filling_is_kept_and_an_old_checkpoint_is_ignored() -> None:
    rng = np.random.default_rng(4)
    before = DriftMonitor(reference_size=1000)
    _feed(before, rng, 0.0, 3)  # 600 of 1000
    after = DriftMonitor(reference_size=1000)
    after.load_state(unpack(pack(before.state())))
    _feed(after, rng, 0.0, 2)
    assert after.state()["shares"] is not None  # 600 restored + 400 new filled it
    untouched = DriftMonitor(reference_size=1000)
    untouched.load_state(None)  # a checkpoint written before the reference was saved
    assert untouched.state()["batches"] == 0 and untouched.state()["shares"] is None
