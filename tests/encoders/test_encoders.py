"""Encoder artifacts and serving: round trip, refusal of tampered/mismatched files, batch invariance, training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.artifact import ArtifactError, EncoderArtifact, load_artifact, save_artifact
from encoders.serving import Encoder, load_encoder
from encoders.train import TrainConfig, train_encoder
from eventlogs.recorded import write_events
from eventlogs.synthetic import SyntheticConfig, generate
from state.features import FeatureSpec
from state.user_store import Features


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    log = d / "log.msgpack"
    write_events(log, generate(SyntheticConfig(users=300, groups=3, events=6000, seed=3)))
    lines: list[str] = []
    art = train_encoder(log, d / "enc.pt", TrainConfig(epochs=20, max_samples=5000), progress=lines.append)
    return d / "enc.pt", art, lines


def test_training_learns_and_reports_progress(trained):
    path, art, lines = trained
    losses = art.metadata["loss_history"]
    assert losses[-1] < 0.7 * losses[0]
    assert sum("epoch" in ln for ln in lines) == 20


def test_round_trip(trained):
    path, art, _ = trained
    loaded = load_artifact(path)
    assert loaded.checksum == art.checksum and loaded.feature_spec == art.feature_spec
    enc = load_encoder(path, device="cpu")
    assert enc.kind == "state-ae" and enc.version == art.version and enc.dim == 16


def test_refuses_tampered_artifact(trained, tmp_path):
    path, art, _ = trained
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["encoder.0.weight"][0, 0] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(tmp_path / "tampered.pt")


def test_refuses_pickle_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "segstream-encoder", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ArtifactError, match="not a loadable"):
        load_artifact(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path / "junk.pt")
    with pytest.raises(ArtifactError, match="no such"):
        load_artifact(tmp_path / "missing.pt")


def test_refuses_mismatched_feature_configuration(trained):
    path, art, _ = trained
    other = FeatureSpec.from_dict({**art.feature_spec.to_dict(), "item_history": 8})
    with pytest.raises(ArtifactError, match="item_history"):
        load_artifact(path, expected_spec=other)


def test_half_life_override_must_match(trained):
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    path, art, _ = trained
    with pytest.raises(ArtifactError, match="half_life"):
        Pipeline.from_settings(Settings(encoder=str(path), half_life_s=art.feature_spec.half_life_s + 1))


def test_embeddings_do_not_depend_on_batch_composition(trained):
    from encoders.train import replay_features

    path, art, _ = trained
    enc = load_encoder(path, device="cpu", max_batch=1024)
    f = replay_features(path.parent / "log.msgpack", enc.spec, max_samples=1024, batch_events=50)  # real states
    n = len(f)
    assert n == 1024
    full = enc.encode(f)
    for i in (0, 17, 1023):
        alone = enc.encode(f.take(np.array([i])))
        np.testing.assert_allclose(alone[0], full[i], rtol=0, atol=1e-5)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(n)
    np.testing.assert_allclose(enc.encode(f.take(shuffled)), full[shuffled], rtol=0, atol=1e-5)
    halves = np.concatenate([enc.encode(f.take(np.arange(0, 300))), enc.encode(f.take(np.arange(300, n)))])
    np.testing.assert_allclose(halves, full, rtol=0, atol=1e-5)


def test_raw_encoder_is_identity():
    spec = FeatureSpec()
    f = Features(np.ones((2, spec.feature_width), np.float32), np.zeros((2, spec.item_history), np.int32),
                 np.zeros((2, spec.item_history), np.float32))
    assert np.array_equal(Encoder.raw(spec).encode(f), f.dense)


def test_artifact_version_is_a_content_hash():
    spec = FeatureSpec()
    a = EncoderArtifact("state-ae", spec, {"dim": 2}, {"w": torch.zeros(2)})
    b = EncoderArtifact("state-ae", spec, {"dim": 2}, {"w": torch.ones(2)})
    assert a.version != b.version and len(a.version) == 12


def test_save_is_atomic(tmp_path):
    art = EncoderArtifact("state-ae", FeatureSpec(), {"dim": 2}, {"w": torch.zeros(2)})
    save_artifact(art, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_the_state_autoencoder_embeds_without_recent_items(trained):
    """It declares that it reads only the dense features, so the pipeline skips gathering items for it."""
    from eventlogs.recorded import read_events
    from state.user_store import UserStore
    from state.events import EventDecoder

    path, _, _ = trained
    enc = load_encoder(path, device="cpu")
    assert not enc.uses_items and not Encoder.raw(enc.spec).uses_items
    store = UserStore(enc.spec, capacity=1000)
    store.apply(EventDecoder(enc.spec).decode_objects(list(read_events(path.parent / "log.msgpack")))[0])
    rows = store.live_rows()
    lean = store.features(rows, items=False)
    assert lean.item_tokens.shape == (len(rows), 0)
    np.testing.assert_array_equal(enc.encode(lean), enc.encode(store.features(rows)))


def test_a_pipeline_on_the_raw_encoder_starts_without_importing_torch():
    # every start and restart of a raw-encoder consumer would otherwise pay torch's import (seconds)
    repo = Path(__file__).resolve().parents[2]
    code = ("import sys; from stream.runtime.pipeline import Pipeline; from stream.settings import Settings; "
            "p = Pipeline.from_settings(Settings()); assert p.encoder.kind == 'raw'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-2000:]
