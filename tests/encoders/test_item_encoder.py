"""The item-aware encoders (``item-pool``, ``item-seq``, ``item-gru``): learn, round-trip, refuse bad artifacts, are
batch-invariant, and put users who touch related items together even when nothing else tells them apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.artifact import ArtifactError, load_artifact
from encoders.serving import Encoder, load_encoder
from encoders.train import TrainConfig, train_encoder
from encoders.train_items import item_vocabulary
from eventlogs.recorded import write_events
from eventlogs.synthetic import SyntheticConfig, generate
from state.features import FeatureSpec
from state.quality import adjusted_rand_index
from state.segments import best_of_restarts
from state.user_store import UserStore
from state.events import EventDecoder

CFG = SyntheticConfig(users=300, groups=3, events=9000, seed=5, items_per_group=60, shared_items=30)


def _items_only(ev: dict) -> dict:
    """The same item sequences with every other signal removed: one action, no categories, no values."""
    return {"user_id": ev["user_id"], "action": "view", "ts": ev["ts"], "item_id": ev["item_id"], "group": ev["group"]}


@pytest.fixture(scope="module")
def items_log(tmp_path_factory):
    log = tmp_path_factory.mktemp("item-log") / "items.msgpack"
    write_events(log, (_items_only(e) for e in generate(CFG)))
    return log


@pytest.fixture(scope="module", params=["item-pool", "item-seq", "item-gru"])
def trained(request, items_log, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    lines: list[str] = []
    cfg = TrainConfig.for_kind(request.param, epochs=15, dim=16, item_history=16, max_samples=20_000)
    art = train_encoder(items_log, d / "item.pt", cfg, progress=lines.append)
    return items_log, d / "item.pt", art, lines


def _final_states(log, spec: FeatureSpec):
    from eventlogs.recorded import read_events

    store = UserStore(spec, capacity=10_000)
    evs = list(read_events(log))
    batch, _ = EventDecoder(spec).decode_objects(evs)
    store.apply(batch)
    rows = store.live_rows()
    groups = {e["user_id"]: e["group"] for e in evs}
    return store.features(rows), np.array([groups[u] for u in store.user_ids(rows)])


def test_item_training_learns_in_seconds(trained):
    _, _, art, lines = trained
    losses = art.metadata["loss_history"]
    assert len(losses) == 15 and sum("epoch" in ln for ln in lines) == 15
    assert losses[-1] < 0.8 * losses[0], losses
    assert art.metadata["seconds"] < 60
    assert art.config["vocab_size"] == art.metadata["vocabulary"] > 0


def test_users_of_related_items_land_together_without_shared_categories(trained):
    log, path, art, _ = trained
    enc = load_encoder(path, device="cpu")
    f, groups = _final_states(log, enc.spec)
    rng = np.random.default_rng(0)
    learned = best_of_restarts(enc.encode(f), 3, rng)
    labels = ((enc.encode(f)[:, None, :] - learned[None]) ** 2).sum(-1).argmin(1)
    raw = Encoder.raw(enc.spec).encode(f)
    raw_labels = ((raw[:, None, :] - best_of_restarts(raw, 3, rng)[None]) ** 2).sum(-1).argmin(1)
    ari_items, ari_raw = adjusted_rand_index(groups, labels), adjusted_rand_index(groups, raw_labels)
    assert ari_items > 0.8, (ari_items, ari_raw)
    assert ari_raw < 0.3, ari_raw  # the raw state sees one action and no categories: no group signal


def test_item_artifact_round_trip_and_refusals(trained, tmp_path):
    _, path, art, _ = trained
    loaded = load_artifact(path)
    assert loaded.kind == art.kind and loaded.checksum == art.checksum
    enc = load_encoder(path, device="cpu")
    assert enc.dim == 16 and enc.version == art.version
    # the vocabulary is part of the checksummed content
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["tokens"][0] += 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(tmp_path / "tampered.pt")
    other = FeatureSpec.from_dict({**art.feature_spec.to_dict(), "item_history": 32})
    with pytest.raises(ArtifactError, match="item_history: 16 != 32"):
        load_encoder(path, expected_spec=other)


def test_item_embeddings_do_not_depend_on_batch_composition(trained):
    from encoders.train import replay_features

    log, path, _, _ = trained
    enc = load_encoder(path, device="cpu", max_batch=1024)
    f = replay_features(log, enc.spec, max_samples=1024, batch_events=20)
    assert len(f) == 1024 and (f.item_tokens >= 0).any()
    full = enc.encode(f)
    for i in (0, 511, 1023):
        np.testing.assert_allclose(enc.encode(f.take(np.array([i])))[0], full[i], rtol=0, atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(f))
    np.testing.assert_allclose(enc.encode(f.take(perm)), full[perm], rtol=0, atol=1e-5)
    small = load_encoder(path, device="cpu", max_batch=7)  # chunked differently
    np.testing.assert_allclose(small.encode(f), full, rtol=0, atol=1e-5)


def test_unknown_items_embed_as_zero_and_known_items_are_normalised(trained):
    _, path, art, _ = trained
    enc = load_encoder(path, device="cpu")
    spec = enc.spec
    n = spec.item_history
    tokens = np.full((3, n), -1, np.int32)
    weights = np.zeros((3, n), np.float32)
    tokens[1, 0] = 12345  # not an item of the log
    weights[1, 0] = 1.0
    known = int(art.state_dict["tokens"][0])
    tokens[2, :2] = [known, 12345]
    weights[2, :2] = 1.0
    from state.user_store import Features

    z = enc.encode(Features(np.zeros((3, spec.feature_width), np.float32), tokens, weights))
    assert np.all(z[0] == 0) and np.all(z[1] == 0)
    assert abs(float(np.linalg.norm(z[2])) - 1.0) < 1e-5


def test_vocabulary_keeps_items_seen_often_enough(trained):
    log, _, art, _ = trained
    spec = art.feature_spec
    all_items = item_vocabulary(log, spec, min_count=1)
    frequent = item_vocabulary(log, spec, min_count=2)
    assert set(frequent) < set(all_items)
    assert np.all(np.diff(frequent) > 0)  # sorted, unique: searchsorted lookups
    assert np.array_equal(art.state_dict["tokens"].numpy(), frequent)


def test_the_pipeline_hands_recent_items_to_an_item_encoder(trained):
    import math

    from eventlogs.recorded import read_events
    from stream.runtime.pipeline import Pipeline
    from stream.settings import Settings

    log, path, _, _ = trained
    p = Pipeline.from_settings(Settings(encoder=str(path), segments=3, warmup_users=50, metrics_port=0),
                               now=lambda: math.inf)
    p.process_objects(list(read_events(log)))
    assert p.encoder.uses_items
    rows = p.store.live_rows()
    with_items = p.encoder.encode(p.store.features(rows))
    assert np.abs(with_items).sum() > 0
    np.testing.assert_array_equal(p._embed(rows), with_items)


def _seq_model(attention: str):
    from encoders.models import SequenceEncoder

    spec = FeatureSpec(item_history=4, half_life_s=10.0)
    m = SequenceEncoder(spec, dim=2, vocab_size=2, attention=attention)
    with torch.no_grad():
        m.tokens.copy_(torch.tensor([7, 9], dtype=torch.int32))
        m.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return spec, m


@pytest.mark.parametrize("attention, expected", [
    ("uniform", [0.5, 0.5]),  # every recent item counts the same, whatever its age
    ("salience", [0.5 * np.e, 0.5]),  # item 7's salience is 1: weight e
    ("salience+recency", [0.5 * np.e * 0.25, 0.5]),  # ... and, two half-lives older at recency 1, 2**-2 of it
])
def test_sequence_attention_weighs_recent_items_by_salience_and_time_gap(attention, expected):
    spec, m = _seq_model(attention)
    with torch.no_grad():
        m.salience.copy_(torch.tensor([1.0, 0.0]))
        m.recency.fill_(1.0)
    tokens = torch.tensor([[7, 9, -1, 12345]], dtype=torch.int32)  # two known items, an empty slot, an unknown item
    weights = torch.tensor([[0.25, 1.0, 0.0, 1.0]])  # item 7 is two half-lives older than item 9
    pooled = m.pool(tokens, weights)[0].detach().numpy()
    np.testing.assert_allclose(pooled / pooled.sum(), np.array(expected) / sum(expected), rtol=1e-6)
    z = m(torch.zeros(1, spec.feature_width), tokens, weights)[0].detach().numpy()
    np.testing.assert_allclose(z, pooled / np.linalg.norm(pooled), rtol=1e-6)


def test_sequence_encoder_learns_its_attention_and_predicts_a_window(items_log, tmp_path):
    cfg = TrainConfig.for_kind("item-seq", epochs=3, dim=8, item_history=16, max_samples=5_000,
                               attention="salience+recency", window=5)
    art = train_encoder(items_log, tmp_path / "seq.pt", cfg, progress=lambda m: None)
    assert art.config["attention"] == "salience+recency"
    assert art.metadata["recency"] != 0.0 and art.metadata["salience_spread"] > 0.0  # both were trained
    assert art.metadata["train_config"]["window"] == 5
    uniform = train_encoder(items_log, tmp_path / "u.pt", TrainConfig.for_kind("item-seq", epochs=1, max_samples=2_000,
                                                                            attention="uniform"), progress=lambda m: None)
    assert uniform.metadata["recency"] == 0.0 and uniform.metadata["salience_spread"] == 0.0  # left alone


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        _seq_model("lstm")


@pytest.mark.parametrize("table", ["co-occurrence", "both"])
def test_co_occurrence_item_vectors_put_users_of_related_items_together(items_log, tmp_path, table):
    """The log's co-occurrence SVD vectors, alone or beside the next-window ones, recover the planted
    groups from item ids alone; ``both`` serves each half of the embedding at unit length."""
    cfg = TrainConfig.for_kind("item-seq", epochs=2, dim=8, item_history=16, max_samples=5_000, table=table)
    lines: list[str] = []
    art = train_encoder(items_log, tmp_path / "seq.pt", cfg, progress=lines.append)
    assert art.metadata["train_config"]["table"] == table
    assert any("co-occurrence vectors" in ln for ln in lines)
    assert sum("epoch" in ln for ln in lines) == (2 if table == "both" else 0)  # co-occurrence alone trains nothing
    assert art.config["dim"] == (16 if table == "both" else 8) and art.config["split"] == (8 if table == "both" else 0)
    enc = load_encoder(tmp_path / "seq.pt", device="cpu")
    f, groups = _final_states(items_log, enc.spec)
    z = enc.encode(f)
    known = np.abs(z).sum(1) > 0
    assert known.mean() > 0.95
    halves = (z[known, :8], z[known, 8:]) if table == "both" else (z[known],)
    for h in halves:
        np.testing.assert_allclose(np.linalg.norm(h, axis=1), (0.5 ** 0.5 if table == "both" else 1.0), rtol=1e-5)
    labels = ((z[:, None, :] - best_of_restarts(z, 3, np.random.default_rng(0))[None]) ** 2).sum(-1).argmin(1)
    assert adjusted_rand_index(groups, labels) > 0.8


def test_co_occurrence_vectors_are_seeded_and_follow_shared_users():
    from encoders.cooccurrence import co_occurrence_vectors

    rng = np.random.default_rng(3)
    # 40 users: the first 20 touch items 0-9, the others items 10-19 (each 6 of their group's items, some twice)
    seqs = [rng.choice(10, 6) + (10 if u >= 20 else 0) for u in range(40)]
    seq = np.concatenate(seqs)
    lengths = np.array([len(s) for s in seqs])
    starts = np.cumsum(lengths) - lengths
    a = co_occurrence_vectors(seq, starts, lengths, vocab_size=21, dim=4, seed=0)
    b = co_occurrence_vectors(seq, starts, lengths, vocab_size=21, dim=4, seed=0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (21, 4) and not a[20].any()  # item 20: touched by nobody
    u = a[:20] / np.linalg.norm(a[:20], axis=1, keepdims=True)
    sim = u @ u.T
    same = np.equal.outer(np.arange(20) < 10, np.arange(20) < 10)
    assert sim[same].mean() > sim[~same].mean() + 0.3


def test_unknown_item_table_is_refused():
    with pytest.raises(ValueError, match="table must be one of"):
        TrainConfig.for_kind("item-seq", table="lstm")


def test_train_encoder_command_passes_the_item_table(items_log, tmp_path, capsys):
    from stream.cli.main import run_cli

    out = tmp_path / "co.pt"
    assert run_cli(["train-encoder", "--log", str(items_log), "--out", str(out), "--table", "co-occurrence",
                    "--dim", "4", "--item-history", "16"]) == 0
    art = load_artifact(out)
    assert art.kind == "item-seq" and art.metadata["train_config"]["table"] == "co-occurrence"
    assert art.config["dim"] == 4 and "co-occurrence vectors" in capsys.readouterr().out


def test_the_recurrent_encoder_reads_the_order_of_the_recent_items_and_the_pooling_does_not():
    from encoders.models import RecurrentEncoder, SequenceEncoder

    spec = FeatureSpec(item_history=4)
    torch.manual_seed(0)
    gru, pool = RecurrentEncoder(spec, dim=8, vocab_size=3).eval(), SequenceEncoder(spec, dim=8, vocab_size=3).eval()
    for m in (gru, pool):
        m.tokens.copy_(torch.tensor([5, 7, 9], dtype=torch.int32))
    tokens = torch.tensor([[5, 7, 9, -1], [5, 7, 9, -1]], dtype=torch.int32)
    # the same three items, newest first in row 0 and oldest first in row 1 (the weights say when each was)
    weights = torch.tensor([[1.0, 0.5, 0.25, 0.0], [0.25, 0.5, 1.0, 0.0]])
    with torch.no_grad():
        g, p = gru(torch.zeros(2, 0), tokens, weights), pool(torch.zeros(2, 0), tokens, weights)
        # the ring's slot order alone changes nothing: the same items at the same times, slots shuffled
        shuffled = gru(torch.zeros(1, 0), tokens[:1, [2, 0, 3, 1]], weights[:1, [2, 0, 3, 1]])
    assert (g[0] - g[1]).abs().max() > 1e-3
    torch.testing.assert_close(p[0], p[1])
    torch.testing.assert_close(shuffled[0], g[0])


def test_unknown_readout_is_refused():
    with pytest.raises(ValueError, match="readout must be one of"):
        TrainConfig.for_kind("item-gru", readout="first")


def test_train_encoder_command_trains_the_recurrent_kind(items_log, tmp_path):
    from stream.cli.main import run_cli

    out = tmp_path / "gru.pt"
    assert run_cli(["train-encoder", "--log", str(items_log), "--out", str(out), "--kind", "item-gru", "--readout", "last",
                    "--dim", "4", "--item-history", "16", "--epochs", "1"]) == 0
    art = load_artifact(out)
    assert art.kind == "item-gru" and art.config["readout"] == "last" and art.config["dim"] == 4
