"""Per-user state: event-time decay, order independence inside a batch, eviction, erasure."""

from __future__ import annotations

import numpy as np
import pytest

from state.features import FeatureSpec
from state.user_store import UserStore
from state.events import EventDecoder

SPEC = FeatureSpec(half_life_s=100.0, category_buckets=8, item_history=4)


def decode(events):
    batch, rejected = EventDecoder(SPEC, now=lambda: 4e9).decode_objects(events)
    assert not rejected
    return batch


def random_events(rng, n, users=5, t0=1.7e9):
    evs = []
    for i in range(n):
        ev = {"user_id": f"u{rng.integers(users)}", "action": ["view", "click", "purchase", "zap"][rng.integers(4)],
              "ts": float(t0 + rng.uniform(0, 1000)), "item_id": int(rng.integers(20))}
        if rng.random() < 0.7:
            ev["categories"] = [f"c{j}" for j in rng.choice(12, rng.integers(1, 3), replace=False)]
        if rng.random() < 0.5:
            ev["value"] = float(rng.uniform(0, 5))
        evs.append(ev)
    return evs


def naive_features(events, user):
    """Reference: one event at a time, decaying the state between events."""
    evs = sorted((e for e in events if e["user_id"] == user), key=lambda e: e["ts"])
    dense = np.zeros(SPEC.dense_width)
    last = None
    for e in evs:
        if last is not None:
            dense *= 2 ** (-(e["ts"] - last) / SPEC.half_life_s)
        last = e["ts"]
        dense[SPEC.COUNT] += 1
        dense[SPEC.action_offset + SPEC.action_index(e["action"])] += 1
        if "value" in e:
            dense[SPEC.VALUE_SUM] += e["value"]
            dense[SPEC.VALUE_COUNT] += 1
        for c in e.get("categories", []):
            dense[SPEC.category_offset + SPEC.category_bucket(c)] += 1 / len(e["categories"])
    count = dense[SPEC.COUNT]
    acts = dense[SPEC.action_offset:SPEC.category_offset] / count
    cats = dense[SPEC.category_offset:]
    cats = cats / max(cats.sum(), 1e-30)
    mean_value = dense[SPEC.VALUE_SUM] / dense[SPEC.VALUE_COUNT] if dense[SPEC.VALUE_COUNT] else 0.0
    scale = np.log1p(1000.0)
    return np.concatenate([acts, cats, [np.log1p(count) / scale, np.sign(mean_value) * np.log1p(abs(mean_value)) / scale,
                                        dense[SPEC.VALUE_COUNT] / count]])


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_matches_one_event_at_a_time_reference(batch_size):
    rng = np.random.default_rng(1)
    events = random_events(rng, 300)
    store = UserStore(SPEC, capacity=100)
    for i in range(0, len(events), batch_size):
        store.apply(decode(events[i:i + batch_size]))
    for u in sorted({e["user_id"] for e in events}):
        row = store.row_of(u)
        got = store.features(np.array([row])).dense[0]
        np.testing.assert_allclose(got, naive_features(events, u), rtol=2e-4, atol=1e-5)


def test_order_inside_a_batch_does_not_matter():
    rng = np.random.default_rng(2)
    events = random_events(rng, 200)
    a, b = UserStore(SPEC, 100), UserStore(SPEC, 100)
    a.apply(decode(events))
    b.apply(decode(list(reversed(events))))
    for u in {e["user_id"] for e in events}:
        fa = a.features(np.array([a.row_of(u)]))
        fb = b.features(np.array([b.row_of(u)]))
        np.testing.assert_allclose(fa.dense, fb.dense, rtol=1e-5, atol=1e-6)
        # the ring of recent items holds the same (item, weight) pairs
        pa = sorted(zip(fa.item_tokens[0].tolist(), np.round(fa.item_weights[0], 5).tolist()))
        pb = sorted(zip(fb.item_tokens[0].tolist(), np.round(fb.item_weights[0], 5).tolist()))
        assert pa == pb


def test_recent_items_keep_the_newest():
    events = [{"user_id": "a", "action": "view", "ts": 1.7e9 + i, "item_id": i} for i in range(10)]
    store = UserStore(SPEC, 10)
    store.apply(decode(events[:3]))
    store.apply(decode(events[3:]))
    f = store.features(np.array([store.row_of("a")]))
    kept = {t for t in f.item_tokens[0].tolist()}
    assert kept == {SPEC.item_token(i) for i in range(6, 10)}
    newest = f.item_weights[0][f.item_tokens[0].tolist().index(SPEC.item_token(9))]
    assert newest == pytest.approx(1.0)


def test_rebase_keeps_state_equivalent():
    # events spread over 200 half-lives force several rebases; result must match the reference
    events = [{"user_id": f"u{i % 3}", "action": "view", "ts": 1.7e9 + i * 500.0, "categories": [f"c{i % 4}"]}
              for i in range(200)]
    store = UserStore(SPEC, 10)
    for i in range(0, 200, 10):
        store.apply(decode(events[i:i + 10]))
    assert store.t0 > 1.7e9 + 40 * SPEC.half_life_s
    for u in ("u0", "u1", "u2"):
        got = store.features(np.array([store.row_of(u)])).dense[0]
        np.testing.assert_allclose(got, naive_features(events, u), rtol=2e-4, atol=1e-5)


def test_a_user_inactive_for_hundreds_of_half_lives_keeps_the_state_of_their_last_event():
    # float32 holds 2**-126: rescaling every row at each rebase left such a user with all-zero sums, and
    # re-embedding them (a restore, labels following a new model version) put them all on the origin
    old = [{"user_id": "old", "action": "purchase", "ts": 1.7e9 + i, "item_id": i, "categories": ["c1"]} for i in range(3)]
    store = UserStore(SPEC, 10)
    store.apply(decode(old))
    before = store.features(np.array([store.row_of("old")]))
    for step in range(1, 9):  # another user active 8 x 40 half-lives later: several rebases
        store.apply(decode([{"user_id": "new", "action": "view", "ts": 1.7e9 + step * 40 * SPEC.half_life_s}]))
    assert store.t0 > 1.7e9 + 300 * SPEC.half_life_s
    after = store.features(np.array([store.row_of("old")]))
    np.testing.assert_allclose(after.dense, before.dense, rtol=1e-5)
    np.testing.assert_allclose(after.item_weights, before.item_weights, rtol=1e-5)
    assert after.item_weights.sum() > 0
    # a snapshot keeps each row's own reference
    block = store.export_rows(store.live_rows())
    copy = UserStore(SPEC, 10)
    copy.import_rows(block)
    np.testing.assert_allclose(copy.features(np.array([copy.row_of("old")])).dense, before.dense, rtol=1e-5)
    # back after all that time: the old history is negligible next to the new event, and nothing is nan
    store.apply(decode([{"user_id": "old", "action": "view", "ts": store.t0 + 1.0}]))
    f = store.features(np.array([store.row_of("old")])).dense[0]
    assert np.isfinite(f).all() and f[SPEC.action_index("view")] == pytest.approx(1.0)


def test_evicts_least_recently_active_beyond_capacity():
    store = UserStore(SPEC, capacity=100)
    store.apply(decode([{"user_id": f"old{i}", "action": "view", "ts": 1.7e9 + i} for i in range(100)]))
    res = store.apply(decode([{"user_id": "new", "action": "view", "ts": 1.8e9}]))
    assert len(store) <= 100
    assert store.row_of("new") is not None
    assert res.evicted_user_ids == ["old0"]  # the least recently active goes first
    assert store.row_of("old0") is None and store.row_of("old99") is not None


def test_eviction_never_drops_users_of_the_current_batch():
    store = UserStore(SPEC, capacity=4)
    store.apply(decode([{"user_id": u, "action": "view", "ts": 1.7e9 + i} for i, u in enumerate("abcd")]))
    store.apply(decode([{"user_id": "a", "action": "view", "ts": 1.6e9}, {"user_id": "e", "action": "view", "ts": 1.7e9}]))
    assert store.row_of("a") is not None and store.row_of("e") is not None
    assert len(store) == 4


def test_a_batch_with_more_users_than_capacity_keeps_its_most_recently_active():
    store = UserStore(SPEC, capacity=4)
    store.apply(decode([{"user_id": u, "action": "view", "ts": 1.7e9 + i} for i, u in enumerate("abc")]))
    # 6 users in one batch: "a" (held) and "x" are its least recently active, "b" (held) is not
    evs = [{"user_id": "a", "action": "view", "ts": 1.7e9 + 10},
           {"user_id": "x", "action": "view", "ts": 1.7e9 + 11},
           {"user_id": "b", "action": "purchase", "ts": 1.7e9 + 12, "value": 2.0},
           {"user_id": "y", "action": "view", "ts": 1.7e9 + 13, "categories": ["c1"], "item_id": 7},
           {"user_id": "z", "action": "click", "ts": 1.7e9 + 14},
           {"user_id": "w", "action": "view", "ts": 1.7e9 + 15},
           {"user_id": "b", "action": "view", "ts": 1.7e9 + 16}]
    batch = decode(evs)
    res = store.apply(batch)
    assert len(store) == 4 and sorted(store.held_ids()) == ["b", "w", "y", "z"]
    assert res.overflow == 2 and res.overflow_new == 1  # "a" and "x" evicted within the batch
    assert sorted(res.evicted_user_ids) == ["a", "c"]  # "c": a held user outside the batch, to make room
    assert store.user_ids(res.rows) == ["b", "y", "z", "w"]  # first-appearance order of the kept users
    assert [evs[int(batch.source_index[i])]["ts"] for i in res.last_event] == [1.7e9 + t for t in (16, 13, 14, 15)]
    b = store.features(np.array([store.row_of("b")])).dense[0]
    assert b[SPEC.action_index("purchase")] > 0 and b[SPEC.action_index("view")] > 0  # its events all applied
    y = store.row_of("y")
    assert store.items[y].max() >= 0 and store.dense[y, SPEC.category_offset:].sum() > 0  # its item and category
    assert sorted(store.live_rows().tolist()) == sorted(store._index.values())


def test_delete_forgets_the_user():
    store = UserStore(SPEC, 10)
    store.apply(decode([{"user_id": "a", "action": "purchase", "ts": 1.7e9, "value": 9.0}]))
    row = store.row_of("a")
    store.segment[row] = 3
    assert store.delete("a") == 3
    assert store.row_of("a") is None and len(store) == 0
    store.apply(decode([{"user_id": "a", "action": "view", "ts": 1.7e9 + 1}]))
    f = store.features(np.array([store.row_of("a")])).dense[0]
    assert f[SPEC.action_index("purchase")] == 0 and f[SPEC.action_index("view")] == 1  # fresh state
    assert store.delete("nobody") is None


def test_memory_is_columnar():
    store = UserStore(SPEC, capacity=10_000)
    store.apply(decode([{"user_id": f"u{i}", "action": "view", "ts": 1.7e9} for i in range(5000)]))
    per_user = store.nbytes() / len(store.dense)
    assert per_user < 200  # a few numpy columns per user, not Python objects


def test_live_rows_are_the_rows_of_held_users_through_eviction_deletion_drops_and_restore():
    rng = np.random.default_rng(3)
    store = UserStore(SPEC, capacity=60)

    def held() -> list[int]:
        return sorted(store.row_of(u) for u in store.held_ids())

    for step in range(12):
        store.apply(decode([{"user_id": f"u{rng.integers(150)}", "action": "view", "ts": 1.7e9 + step * 10 + i}
                            for i in range(25)]))
        if step % 3 == 0 and len(store):
            store.delete(store.held_ids()[0])
        if step % 4 == 1:
            store.drop_rows(store.live_rows()[::5])
        assert store.live_rows().tolist() == held()
    restored = UserStore(SPEC, capacity=60)
    restored.import_rows(store.export_rows(store.live_rows()[::2]), keep_rows=True)
    assert restored.live_rows().tolist() == sorted(restored.row_of(u) for u in restored.held_ids())
    assert len(restored.live_rows()) == len(store.live_rows()[::2]) > 0


def test_any_id_comes_back_as_given_non_ascii_and_lone_surrogates_included():
    """The store keeps ids as UTF-8 bytes (surrogates passed through): every id comes back as the same str."""
    store = UserStore(FeatureSpec(), capacity=8)
    odd = ["é-ü", "\ud800x", "user 1", "用户", "x" * 256]
    batch, rejected = EventDecoder(FeatureSpec(), now=lambda: 4e9).decode_objects(
        [{"user_id": u, "action": "view", "ts": 1.7e9} for u in odd])
    assert not rejected
    store.apply(batch)
    rows = store.rows_of(odd)
    assert store.user_ids(rows) == odd and sorted(store.held_ids()) == sorted(odd)
    assert [store.row_of(u) for u in odd] == rows.tolist() and store.row_of("e-u") is None
    assert store.delete("\ud800x") is not None and store.row_of("\ud800x") is None and len(store) == 4


def test_per_row_change_ids_grow_no_further_than_the_store_capacity():
    from state.contract_tail import ContractTails

    capped, free = ContractTails(capacity=3000), ContractTails()
    for t in (capped, free):
        for top in (1000, 2500, 3000):
            t.set_change_ids(np.array([top - 1]), ["00" * 15 + "2a"])
    assert capped.row_nbytes() == 16 * 3000 and free.row_nbytes() == 16 * 5000
    assert bytes(capped.change_ids(np.array([2999]))[0])[-1] == 42


def test_ids_the_id_column_keeps_outside_survive_eviction_and_a_restore_onto_their_rows():
    # a trailing NUL (numpy pads with NULs), a prefix of another id, one far longer than the rest
    odd = ["a", "a\x00", "a\x00\x00", "ab", "z" * 200, "user-1"]
    store = UserStore(SPEC, capacity=6)
    store.apply(decode([{"user_id": u, "action": "view", "ts": 1.7e9 + i} for i, u in enumerate(odd)]))
    rows = store.rows_of(odd)
    assert len(set(rows.tolist())) == 6 and store.user_ids(rows) == odd
    # a new user evicts the least recently active ("a"): its row goes to the newcomer
    applied = store.apply(decode([{"user_id": "b\x00", "action": "view", "ts": 1.8e9}]))
    assert applied.evicted_user_ids == ["a"] and store.row_of("a") is None
    assert store.user_id(int(store.rows_of(["b\x00"])[0])) == "b\x00"
    assert store.rows_of(odd[1:]).tolist() == rows[1:].tolist()
    restored = UserStore(SPEC, capacity=6)
    restored.import_rows(store.export_rows(store.live_rows()), keep_rows=True)
    restored.set_layout(store.layout())
    held = odd[1:] + ["b\x00"]
    assert restored.rows_of(held).tolist() == store.rows_of(held).tolist()
    assert sorted(restored.held_ids()) == sorted(held) and restored.row_of("a") is None


@pytest.mark.parametrize("as_bytes", [False, True])
def test_importing_blocks_one_after_another_replaces_held_users_and_adds_the_others(as_bytes):
    # a restore imports partition after partition: a user held already (same id, so same key) must
    # land on its own row again, never on a second one, whether ids come as str or as the changelog's bytes
    events = [{"user_id": u, "action": "view", "ts": 1.7e9 + i, "item_id": i} for i, u in enumerate("abcd")]
    src = UserStore(SPEC, 10)
    src.apply(decode(events))
    src.apply(decode([{"user_id": "b", "action": "click", "ts": 1.7e9 + 10}]))

    def block(users):
        rows = np.array([src.row_of(u) for u in users])
        b = src.export_rows(rows)
        b["key"] = src.key[rows].copy()
        if as_bytes:
            b["ids"] = [u.encode() for u in b["ids"]]
        return b

    dst = UserStore(SPEC, 10)
    dst.import_rows(block(["a", "b"]))
    dst.import_rows(block(["c", "d"]))  # no key in common: no lookup needed
    dst.import_rows(block(["b", "d"]))  # both held: replaced in place
    assert len(dst) == 4 and sorted(dst.held_ids()) == ["a", "b", "c", "d"]
    assert len({dst.row_of(u) for u in "abcd"}) == 4
    for u in "abcd":
        np.testing.assert_array_equal(dst.features(np.array([dst.row_of(u)])).dense,
                                      src.features(np.array([src.row_of(u)])).dense)
    assert dst.key[dst.row_of("b")] == src.key[src.row_of("b")]
