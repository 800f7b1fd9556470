"""Catalog metrics against a per-user reference written straight from docs/retrieval.md, and hand-worked lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import percentileofscore

from twotower.retrieval.index import exact_topk
from twotower.retrieval.metrics import catalog_metrics, gini, play_percentiles, tail_item_sets
from twotower.retrieval.sets import ItemSets

# ------------------------------------------------------------------------------------------- reference


def reference(top_lists, target_lists, ks, tails=None, catalog=None, plays=None, vectors=None, beyond_k=100):
    """Per-user loop over the contract's table (Python sets, explicit sums and pairs)."""
    per, tail_users = [], {label: 0 for label in tails or {}}
    recommended = []
    for top, targets in zip(top_lists, target_lists, strict=True):
        t = set(targets)
        if not t:
            continue
        top = [i for i in top]
        row = {}
        for k in ks:
            head = [i for i in top[:k] if i >= 0]
            row[f"recall@{k}"] = len(set(head) & t) / len(t)
            row[f"hit@{k}"] = 1.0 if set(head) & t else 0.0
            dcg = sum(1 / math.log2(r + 1) for r, i in enumerate(top[:k], start=1) if i in t)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(t)) + 1))
            row[f"ndcg@{k}"] = dcg / idcg
        for label, ids in (tails or {}).items():
            tt = t & set(ids)
            for k in ks:
                row[f"tail_recall@{k}[{label}]"] = len(set(top[:k]) & tt) / len(tt) if tt else None
            tail_users[label] += bool(tt)
        listed = [i for i in top[:beyond_k] if i >= 0]
        recommended.append(listed)
        if plays is not None:
            pos = {item: p for item, p in zip(catalog, plays, strict=True)}
            pcts = [percentileofscore(plays, pos[i], kind="mean") for i in listed]
            row[f"popularity@{beyond_k}"] = sum(pcts) / len(pcts) if pcts else None
        if vectors is not None:
            vec = {item: np.asarray(v, dtype=float) for item, v in zip(catalog, vectors, strict=True)}
            sims = []
            for a in range(len(listed)):
                for b in range(a + 1, len(listed)):
                    va, vb = vec[listed[a]], vec[listed[b]]
                    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
                    sims.append(float(va @ vb / (na * nb)) if na > 0 and nb > 0 else 0.0)
            row[f"diversity@{beyond_k}"] = 1 - sum(sims) / len(sims) if sims else None
        per.append(row)
    names = per[0].keys() if per else []
    values = {}
    for name in names:
        vals = [r[name] for r in per if r[name] is not None]
        values[name] = sum(vals) / len(vals) if vals else None
    if catalog is not None and per:
        counts = {item: 0 for item in catalog}
        for listed in recommended:
            for i in listed:
                counts[i] += 1
        c = list(counts.values())
        values[f"coverage@{beyond_k}"] = sum(1 for x in c if x) / len(catalog)
        # Gini as the mean absolute difference over all ordered pairs / (2 · mean)
        mad = sum(abs(a - b) for a in c for b in c) / len(c) ** 2
        values[f"gini@{beyond_k}"] = mad / (2 * (sum(c) / len(c)))
    return values, per, tail_users


def random_case(seed, n_users=300, n_items=400, kmax=60, zero_vectors=True):
    rng = np.random.default_rng(seed)
    catalog = rng.choice(10 * n_items, n_items, replace=False).astype(np.int64)
    plays = rng.integers(0, 6, n_items)  # many equal play counts
    vectors = rng.normal(size=(n_items, 5))
    if zero_vectors:
        vectors[:5] = 0.0
    top = np.full((n_users, kmax), -1, dtype=np.int64)
    targets = []
    for u in range(n_users):
        length = kmax if u % 4 else int(rng.integers(0, kmax))  # some short (padded) lists
        top[u, :length] = rng.choice(catalog, length, replace=False)
        n_t = int(rng.integers(0, 12))  # some users without a target
        t = rng.choice(catalog, n_t, replace=True)  # duplicates count once
        targets.append(t)
    return rng, catalog, plays, vectors, top, targets


def assert_matches(result, expected):
    """Every expected value; what the reference cannot compute (no catalog given) is not available."""
    assert set(expected) <= set(result.values)
    for name in set(result.values) - set(expected):
        assert result.values[name] is None, name
    for name, value in expected.items():
        assert result.values[name] == pytest.approx(value, abs=1e-12, rel=1e-12), name


# ------------------------------------------------------------------------------------------- random data


@pytest.mark.parametrize(("seed", "sparse"), [(0, False), (1, False), (2, True)])
def test_random_lists_equal_reference(seed, sparse):
    rng, catalog, plays, vectors, top, targets = random_case(seed)
    if sparse:  # ids spread over 2^42 (no direct lookup table): the same lists, other ids
        catalog = catalog * 2**32 + 5
        top = np.where(top >= 0, top * 2**32 + 5, -1)
        targets = [t * 2**32 + 5 for t in targets]
    ks = (1, 5, 10, 60)
    tails = tail_item_sets(catalog, plays, [1, 3])
    result = catalog_metrics(
        top,
        ItemSets.from_lists(targets),
        ks=ks,
        tail_items=tails,
        catalog_ids=catalog,
        item_plays=plays,
        item_vectors=vectors,
        beyond_k=40,
        per_user=True,
        user_ids=np.arange(len(top)) + 1000,
    )
    expected, per, tail_users = reference(top.tolist(), targets, ks, tails, catalog, plays, vectors, 40)
    assert_matches(result, expected)
    assert result.n_users == len(per) == sum(1 for t in targets if len(t))
    assert result.n_users_input == len(top)
    assert result.n_users_no_target == len(top) - len(per)
    assert result.n_targets == sum(len(set(t)) for t in targets)
    assert result.tail_users == tail_users
    assert 0 < tail_users["plays<1"] < tail_users["plays<3"] < result.n_users
    table = result.per_user
    assert list(table["user_id"]) == [1000 + u for u, t in enumerate(targets) if len(t)]
    for name in per[0]:
        want = np.array([np.nan if r[name] is None else r[name] for r in per])
        np.testing.assert_allclose(table[name].to_numpy(), want, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_tied_scores_through_exact_topk_equal_reference():
    """Scores on 4 levels: the tie rule (smaller item id first) decides most of every list."""
    rng = np.random.default_rng(7)
    n_users, n_items, k = 200, 300, 50
    ids = rng.choice(5000, n_items, replace=False).astype(np.int64)
    vectors = rng.integers(0, 2, (n_items, 3)).astype(np.float32)
    queries = np.ones((n_users, 3), dtype=np.float32)
    seen = ItemSets.from_lists(
        [rng.choice(ids, int(rng.integers(0, 30)), replace=False) for _ in range(n_users)]
    )
    targets = [rng.choice(ids, int(rng.integers(1, 20)), replace=False) for _ in range(n_users)]
    top, _ = exact_topk(queries, ids, vectors, k, seen)
    result = catalog_metrics(top, ItemSets.from_lists(targets), ks=(10, 50), beyond_k=50)
    # the reference ranks every unseen item itself: score descending, then the item id
    score = dict(zip(ids.tolist(), vectors.sum(axis=1).tolist(), strict=True))
    lists = []
    for excluded in seen.to_lists():
        cands = [i for i in ids.tolist() if i not in set(excluded)]
        lists.append(sorted(cands, key=lambda i: (-score[i], i))[:k])
    assert top.tolist() == lists
    expected, _, _ = reference(lists, targets, (10, 50), beyond_k=50)
    assert_matches(result, expected)


def test_users_mask_is_the_same_as_passing_the_subset():
    rng, catalog, plays, vectors, top, targets = random_case(3, n_users=120)
    mask = rng.random(len(top)) < 0.4
    kw = dict(
        ks=(5, 60),
        tail_items=tail_item_sets(catalog, plays, [2]),
        catalog_ids=catalog,
        item_plays=plays,
        item_vectors=vectors,
        beyond_k=20,
        per_user=True,
    )
    sliced = catalog_metrics(top, ItemSets.from_lists(targets), users_mask=mask, **kw)
    subset = catalog_metrics(
        top[mask],
        ItemSets.from_lists([t for t, m in zip(targets, mask, strict=True) if m]),
        user_ids=np.flatnonzero(mask),
        **kw,
    )
    assert sliced.as_dict() == subset.as_dict()
    assert sliced.per_user.equals(subset.per_user)
    assert sliced.n_users_input == int(mask.sum())


# ------------------------------------------------------------------------------------------ hand-worked


def test_hand_worked_lists():
    # users: 0 targets {3, 7}, list 7 1 3 9; 1 targets {5}, list 2 4 6 5; 2 no target (left out);
    # 3 targets {8, 8, 2} = {2, 8}, list 2 (then padding)
    top = np.array([[7, 1, 3, 9], [2, 4, 6, 5], [1, 2, 3, 4], [2, -1, -1, -1]])
    targets = ItemSets.from_lists([[3, 7], [5], [], [8, 8, 2]])
    catalog = np.arange(1, 10)
    plays = np.array([10, 0, 0, 5, 5, 5, 1, 2, 0])  # items 1..9
    vectors = np.array([[1, 0], [1, 1], [0, 2], [2, 2], [0, 0], [1, 1], [1, 0], [0, 1], [-1, 0]], dtype=float)
    r = catalog_metrics(
        top,
        targets,
        ks=(1, 2, 4),
        tail_items={"t": np.array([3, 5, 9])},
        catalog_ids=catalog,
        item_plays=plays,
        item_vectors=vectors,
        beyond_k=4,
        per_user=True,
    )
    ideal2 = 1 + 1 / math.log2(3)  # two hits at ranks 1 and 2
    # recall@1: user 0: 7 is a target -> 1/2; user 1: 0; user 3: 1/2
    assert r["recall@1"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert r["recall@2"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    # recall@4: user 0 finds 7 and 3 -> 1; user 1 finds 5 at rank 4 -> 1; user 3 -> 1/2
    assert r["recall@4"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert r["hit@1"] == pytest.approx(2 / 3) and r["hit@4"] == pytest.approx(1.0)
    # ndcg@1: users 0 and 3 hit at rank 1 (ideal 1) -> 1; user 1 -> 0
    assert r["ndcg@1"] == pytest.approx(2 / 3)
    # ndcg@2: user 0 dcg 1/log2(2) = 1, ideal min(2, 2) hits = 1 + 1/log2(3); user 3 the same; user 1: 0
    assert r["ndcg@2"] == pytest.approx((1 / ideal2 + 0 + 1 / ideal2) / 3)
    # ndcg@4: user 0 dcg 1 + 1/log2(4) = 1.5; user 1 dcg 1/log2(5), ideal 1; user 3: 1 / ideal2
    assert r["ndcg@4"] == pytest.approx((1.5 / ideal2 + 1 / math.log2(5) + 1 / ideal2) / 3)
    # tail {3, 5, 9}: user 0's tail target {3} found at rank 3, user 1's {5} at rank 4; user 3 has none
    assert r["tail_recall@2[t]"] == 0.0 and r["tail_recall@4[t]"] == 1.0
    assert r.tail_users == {"t": 2} and r.tail_targets == {"t": 2}
    assert (r.n_users, r.n_users_input, r.n_users_no_target, r.n_targets) == (3, 4, 1, 5)
    # beyond accuracy over users 0, 1, 3: items 1 2 3 4 5 6 7 9 listed (8 of 9); item 2 twice, item 8 never
    assert r["coverage@4"] == pytest.approx(8 / 9)
    # counts sorted [0, 1 x 7, 2]: sum_i (2i - 10) c_(i) = 0 + (-6 -4 -2 +0 +2 +4 +6) + 8 * 2 = 16; / (9 * 9)
    assert r["gini@4"] == pytest.approx(16 / 81)
    # plays sorted [0 0 0 1 2 5 5 5 10]: mid-rank percentiles 0 -> 1.5/9, 1 -> 3.5/9, 5 -> 6.5/9, 10 -> 8.5/9
    # user 0 (plays 1, 10, 0, 0): (3.5 + 8.5 + 1.5 + 1.5) / 4 = 3.75; user 1 (0, 5, 5, 5): 5.25; user 3: 1.5
    assert r["popularity@4"] == pytest.approx((3.75 + 5.25 + 1.5) / 3 / 9 * 100)
    # user 0 vectors (1,0) (1,0) (0,2) (-1,0): pair cosines 1 0 -1 0 -1 0 -> mean -1/6 -> diversity 7/6;
    # user 1 (1,1) (2,2) (1,1) (0,0): 1 1 1 and 0 for the zero vector's three pairs -> 1 - 3/6; user 3: n/a
    assert r["diversity@4"] == pytest.approx((7 / 6 + 0.5) / 2)
    assert np.isnan(r.per_user["diversity@4"].iloc[2])
    assert list(r.per_user["user_id"]) == [0, 1, 3]
    assert np.isnan(r.per_user["tail_recall@4[t]"].iloc[2])


def test_gini_and_percentiles():
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 7]) == pytest.approx(3 / 4)  # one item has everything: (n - 1) / n
    assert gini([0, 0]) is None
    np.testing.assert_allclose(play_percentiles([0, 0, 4, 1]), [25.0, 25.0, 87.5, 62.5])
    tails = tail_item_sets([4, 5, 6], [0, 3, 1], [1, 3])
    assert {label: ids.tolist() for label, ids in tails.items()} == {"plays<1": [4], "plays<3": [4, 6]}


def test_nothing_to_evaluate_is_not_available():
    r = catalog_metrics(
        np.full((2, 10), -1),
        ItemSets.from_lists([[], []]),
        ks=(10,),
        beyond_k=10,
        catalog_ids=np.arange(5),
        item_plays=np.zeros(5),
        item_vectors=np.ones((5, 2)),
    )
    assert r["recall@10"] is None and r["coverage@10"] is None and r["popularity@10"] is None
    assert (r.n_users, r.n_users_no_target) == (0, 2)
    assert r.as_dict()["n_items@10"] == 0
    # evaluated users whose lists are empty: recall 0, list metrics not available
    r = catalog_metrics(
        np.full((1, 3), -1), ItemSets.from_lists([[2]]), ks=(3,), beyond_k=3,
        catalog_ids=np.arange(5), item_plays=np.zeros(5), item_vectors=np.ones((5, 2)),
    )  # fmt: skip
    assert r["recall@3"] == 0.0 and r["coverage@3"] == 0.0
    assert r["popularity@3"] is None and r["diversity@3"] is None


def test_without_catalog_the_beyond_accuracy_metrics_are_not_available():
    r = catalog_metrics(np.array([[1, 2]]), ItemSets.from_lists([[2]]), ks=(2,), beyond_k=2)
    assert r["recall@2"] == 1.0 and r["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert r["coverage@2"] is None and r["diversity@2"] is None and r.n_catalog is None


@pytest.mark.parametrize(
    ("top", "kwargs", "match"),
    [
        ([[1, 2]], {"ks": (5,)}, "fewer than the largest K = 5"),
        ([[1, 1]], {"ks": (2,)}, "row 0 lists an item more than once"),
        ([[1, -2]], {"ks": (2,)}, "non-negative"),
        ([[1, 9]], {"ks": (2,), "catalog_ids": np.array([1, 2])}, "1 item id.*not in catalog_ids, e.g. 9"),
        ([[1, 2]], {"ks": (2,), "item_plays": np.zeros(2)}, "pass catalog_ids too"),
        (
            [[1, 2]],
            {"ks": (2,), "catalog_ids": np.array([1, 2]), "item_plays": np.zeros(3)},
            "item_plays has 3 rows",
        ),
        ([[1, 2]], {"ks": (0,)}, "positive integers"),
    ],
)
def test_bad_input_is_a_clear_error(top, kwargs, match):
    kwargs.setdefault("beyond_k", 2)
    with pytest.raises(ValueError, match=match):
        catalog_metrics(np.array(top), ItemSets.from_lists([[1]]), **kwargs)
