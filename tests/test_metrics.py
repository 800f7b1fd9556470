"""The vectorised metrics against per-user references written straight from docs/metrics.md.

``reference_metrics`` (a plain loop over users; scikit-learn for auc and map) is also what
``benchmarks/metrics.py`` times the vectorised version against.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from twotower.evaluate.baselines import item_popularity, popularity_scores, random_scores
from twotower.evaluate.metrics import SHEET_METRICS, global_auc, metric_names, ranking_metrics

# ------------------------------------------------------------------------------------------- reference


def reference_user(items, labels, scores, *, avg_prec_ks=(10,), ndcg_ks=(5, 10), recall_ks=(5, 10, 50, 100)):
    """Every per-user value of metrics.md for one user's list, by the formulas (loops, no tricks)."""
    items, labels, scores = np.asarray(items), np.asarray(labels), np.asarray(scores, dtype=float)
    order = sorted(range(len(items)), key=lambda i: (-scores[i], items[i]))
    y = [int(labels[i]) for i in order]  # y[i - 1] = label at rank i
    r = sum(y)
    out = {
        "auc": roc_auc_score(labels, scores),
        "map": average_precision_score(labels, scores),
        "mrr": sum(y[i - 1] / i for i in range(1, len(y) + 1)) / r,
    }
    for k in avg_prec_ks:
        total = 0.0
        for i in range(1, min(k, len(y)) + 1):
            total += y[i - 1] * (sum(y[:i]) / i)
        out[f"avg_prec@{k}"] = total / min(r, k)
    for k in ndcg_ks:
        dcg = sum((2 ** y[i - 1] - 1) / math.log2(i + 1) for i in range(1, min(k, len(y)) + 1))
        ideal_labels = sorted(y, reverse=True)
        idcg = sum((2 ** ideal_labels[i - 1] - 1) / math.log2(i + 1) for i in range(1, min(k, len(y)) + 1))
        out[f"ndcg@{k}"] = dcg / idcg
    for k in recall_ks:
        out[f"recall@{k}"] = sum(y[:k]) / min(k, r)
    out["recall@all_pos"] = sum(y[:r]) / r
    return out


def reference_metrics(
    users,
    items,
    labels,
    scores,
    *,
    avg_prec_ks=(10,),
    ndcg_ks=(5, 10),
    recall_ks=(5, 10, 50, 100),
    recall_gt_ns=(5, 100),
):
    """Per-user loop: the mean over users with a positive and a negative of ``reference_user``."""
    frame = pd.DataFrame({"u": users, "i": items, "y": labels, "s": scores})
    per_user, sizes = [], []
    left_pos = left_neg = 0
    for _, g in frame.groupby("u", sort=False):
        r = int(g["y"].sum())
        if r == len(g):
            left_pos += 1
            continue
        if r == 0:
            left_neg += 1
            continue
        per_user.append(
            reference_user(
                g["i"].to_numpy(),
                g["y"].to_numpy(),
                g["s"].to_numpy(),
                avg_prec_ks=avg_prec_ks,
                ndcg_ks=ndcg_ks,
                recall_ks=recall_ks,
            )
        )
        sizes.append(len(g))
    sizes = np.array(sizes)
    out = {}
    for name in metric_names(avg_prec_ks, ndcg_ks, recall_ks, recall_gt_ns):
        if name.startswith("recall@gt_"):
            big = sizes > int(name.removeprefix("recall@gt_"))
            vals = [v["recall@all_pos"] for v, b in zip(per_user, big, strict=True) if b]
            out[f"n_users_{name}"] = len(vals)
        else:
            vals = [v[name] for v in per_user]
        out[name] = float(np.mean(vals)) if vals else None
    out["n_users"] = len(per_user)
    out["n_rows"] = int(sizes.sum())
    out["n_users_left_out_all_positive"] = left_pos
    out["n_users_left_out_all_negative"] = left_neg
    return out


def random_lists(seed, n_users, *, min_len=2, max_len=300, ties=False, tie_levels=4):
    """Random played lists: lengths min_len..max_len, a random positive rate per user, optional ties."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n_users)
    users = np.repeat(rng.permutation(n_users) * 7 + 3, lengths)
    rates = np.repeat(rng.random(n_users), lengths)
    labels = (rng.random(len(users)) < rates).astype(int)
    # item ids unique within a user (one row per user and item), shared across users
    items = np.concatenate([rng.choice(5000, size=n, replace=False) for n in lengths])
    scores = rng.integers(0, tie_levels, len(users)).astype(float) if ties else rng.normal(size=len(users))
    perm = rng.permutation(len(users))  # rows of a user need not be adjacent
    return users[perm], items[perm], labels[perm], scores[perm]


def assert_matches_reference(got, ref, tol=1e-9):
    d = got.as_dict()
    for name, value in ref.items():
        if value is None:
            assert d[name] is None, name
        else:
            assert d[name] == pytest.approx(value, abs=tol, rel=0), name


# ------------------------------------------------------------------------- vectorised == reference loop


@pytest.mark.parametrize(
    ("seed", "ties", "tie_levels"),
    [(0, False, 0), (1, True, 4), (2, True, 2), (3, True, 40)],
    ids=["continuous", "ties-4-levels", "ties-2-levels", "ties-40-levels"],
)
def test_vectorised_equals_reference_on_1000_users(seed, ties, tie_levels):
    users, items, labels, scores = random_lists(seed, 1000, ties=ties, tie_levels=tie_levels)
    got = ranking_metrics(users, items, labels, scores)
    ref = reference_metrics(users, items, labels, scores)
    assert got.n_users == ref["n_users"] >= 900
    assert got.recall_gt_users["recall@gt_100"] == ref["n_users_recall@gt_100"] > 0
    assert_matches_reference(got, ref)
    # global auc = one roc_auc_score over the evaluated rows pooled
    r = pd.Series(labels).groupby(users).transform("sum").to_numpy()
    n = pd.Series(labels).groupby(users).transform("size").to_numpy()
    keep = (r > 0) & (r < n)
    assert got.global_auc == pytest.approx(roc_auc_score(labels[keep], scores[keep]), abs=1e-9)
    assert got.n_rows == keep.sum() and got.positive_share == pytest.approx(labels[keep].mean())


def test_vectorised_equals_reference_with_extreme_positive_rates_and_other_ks():
    rng = np.random.default_rng(5)
    users, items, labels, scores = random_lists(5, 600, min_len=1, max_len=40, ties=True, tie_levels=3)
    # skew the positive rate: many all-positive / all-negative users, and users with one positive
    labels = np.where(rng.random(len(labels)) < 0.5, labels, (rng.random(len(labels)) < 0.05).astype(int))
    kw = dict(avg_prec_ks=(1, 3, 20), ndcg_ks=(1, 2, 7), recall_ks=(1, 3), recall_gt_ns=(0, 10, 39, 40))
    got = ranking_metrics(users, items, labels, scores, **kw)
    ref = reference_metrics(users, items, labels, scores, **kw)
    assert got.users_left_out["all positive"] == ref["n_users_left_out_all_positive"] > 0
    assert got.users_left_out["all negative"] == ref["n_users_left_out_all_negative"] > 0
    assert got.values["recall@gt_40"] is None and got.recall_gt_users["recall@gt_40"] == 0
    assert_matches_reference(got, ref)


def test_per_user_table_matches_reference():
    users, items, labels, scores = random_lists(7, 200, max_len=30, ties=True)
    labels[users == users[0]] = 1  # one all-positive user
    got = ranking_metrics(users, items, labels, scores, per_user=True)
    table = got.per_user.set_index("user_id")
    assert len(table) == 200 and table.loc[users[0], "status"] == "all positive"
    assert np.isnan(table.loc[users[0], "auc"])
    for u in np.unique(users)[:50]:
        m = users == u
        if table.loc[u, "status"] != "evaluated":
            continue
        ref = reference_user(items[m], labels[m], scores[m])
        for name, value in ref.items():
            assert table.loc[u, name] == pytest.approx(value, abs=1e-9), (u, name)
    evaluated = table[table["status"] == "evaluated"]
    assert got.values["ndcg@10"] == pytest.approx(evaluated["ndcg@10"].mean(), abs=1e-12)


# --------------------------------------------------------------------------- hand-worked expected values


def test_hand_worked_list():
    # ranked (score desc): items 10(+) 11(-) 12(+) 13(-) 14(-) 15(+); n = 6, r = 3
    items = [13, 11, 15, 10, 14, 12]
    scores = [0.6, 0.8, 0.1, 0.9, 0.5, 0.7]
    labels = [0, 0, 1, 1, 0, 1]
    m = ranking_metrics([1] * 6, items, labels, scores).as_dict()
    # pairs (pos > neg): 10 beats 3, 12 beats 2, 15 beats 0 -> 5 / 9
    assert m["auc"] == pytest.approx(5 / 9)
    # AP: precision at each positive 1/1, 2/3, 3/6 -> mean
    assert m["map"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)
    idcg5 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / idcg5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7)) / idcg5)
    assert m["avg_prec@10"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["recall@10"] == m["recall@50"] == m["recall@100"] == 1.0
    assert m["recall@all_pos"] == pytest.approx(2 / 3)  # top 3 holds 10 and 12
    assert m["recall@gt_5"] == pytest.approx(2 / 3) and m["n_users_recall@gt_5"] == 1
    assert m["recall@gt_100"] is None and m["n_users_recall@gt_100"] == 0
    assert m["global_auc"] == pytest.approx(5 / 9)
    assert (m["n_users"], m["n_rows"], m["positive_share"]) == (1, 6, 0.5)


def test_hand_worked_avg_prec_at_k_and_recall_at_k_cut_offs():
    # ranked: + - - + + ; r = 3
    labels = [1, 0, 0, 1, 1]
    m = ranking_metrics(
        [1] * 5, [1, 2, 3, 4, 5], labels, [5, 4, 3, 2, 1], avg_prec_ks=(2, 4), recall_ks=(1, 2, 4)
    ).as_dict()
    assert m["avg_prec@2"] == pytest.approx(1.0 / 2)  # (1 * 1/1) / min(3, 2)
    assert m["avg_prec@4"] == pytest.approx((1 + 2 / 4) / 3)
    assert m["recall@1"] == 1.0  # 1 / min(1, 3)
    assert m["recall@2"] == pytest.approx(1 / 2)
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["recall@all_pos"] == pytest.approx(1 / 3)


def test_tie_rule_smaller_item_id_first():
    # all scores equal: the rank order is the item id order 3(-) 5(+) 9(-)
    m = ranking_metrics([7, 7, 7], [9, 5, 3], [0, 1, 0], [0.5, 0.5, 0.5]).as_dict()
    assert m["mrr"] == pytest.approx(1 / 2)
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert m["recall@all_pos"] == 0.0
    assert m["avg_prec@10"] == pytest.approx(1 / 2)
    # auc and map treat the tie as one threshold (scikit-learn): auc 1/2, map = precision 1/3
    assert m["auc"] == pytest.approx(0.5)
    assert m["map"] == pytest.approx(1 / 3)


def test_partial_ties_in_auc_and_map():
    # scores: A(+) 0.9, B(-) 0.5, C(+) 0.5, D(-) 0.1 -> C ties with B
    m = ranking_metrics([1] * 4, [1, 2, 3, 4], [1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]).as_dict()
    assert m["auc"] == pytest.approx((2 + 1.5) / 4)
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 2)  # item 2 (-) ranks before item 3 (+)


def test_users_left_out_and_counts():
    users = [1, 1, 2, 2, 2, 3, 3, 4, 5, 5]
    labels = [1, 0, 1, 1, 1, 0, 0, 1, 0, 1]
    scores = [0.2, 0.1, 0.5, 0.4, 0.3, 0.9, 0.8, 0.7, 0.3, 0.6]
    got = ranking_metrics(users, list(range(10)), labels, scores)
    assert got.users_left_out == {"all positive": 2, "all negative": 1}
    assert (got.n_users, got.n_rows, got.n_users_input, got.n_rows_input) == (2, 4, 5, 10)
    assert got.positive_share == 0.5
    assert got.values["auc"] == 1.0 and got.global_auc == pytest.approx(0.75)
    d = got.as_dict()
    assert d["n_users_left_out"] == 3 and d["n_users_left_out_all_positive"] == 2


def test_nothing_qualifies_gives_not_available_not_zero():
    for users, labels in (([1, 1, 2], [1, 1, 1]), ([1, 2], [0, 0]), ([], [])):
        got = ranking_metrics(users, list(range(len(users))), labels, [0.1] * len(users))
        assert all(v is None for v in got.values.values())
        assert got.global_auc is None and got.positive_share is None
        assert got.n_users == 0 and all(c == 0 for c in got.recall_gt_users.values())


def test_result_names_and_string_ids():
    got = ranking_metrics(
        ["b", "b", "a", "a"], ["x", "y", "y", "x"], [True, False, False, True], [1, 1, 2, 3]
    )
    assert tuple(got.values) == SHEET_METRICS
    assert SHEET_METRICS == (
        "auc", "avg_prec@10", "map", "mrr", "ndcg@5", "ndcg@10", "recall@5", "recall@10", "recall@50",
        "recall@100", "recall@gt_5", "recall@gt_100", "recall@all_pos",
    )  # fmt: skip
    # user b: tie, "x" (+) first -> mrr 1, auc 1/2; user a: x (+) scores 3 > 2 -> 1
    assert got.values["mrr"] == 1.0 and got.values["auc"] == 0.75


def test_global_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 5000)
    s = rng.integers(0, 7, 5000).astype(float)
    assert global_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_negative_zero_and_negative_scores_rank_correctly():
    users, items, labels, scores = random_lists(11, 300, max_len=20)
    scores = np.round(scores, 1)
    scores[scores == 0] = -0.0
    got = ranking_metrics(users, items, labels, scores)
    assert_matches_reference(got, reference_metrics(users, items, labels, scores))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [([0, 2], [0.1, 0.2], "0 or 1"), ([0, 1], [0.1, np.nan], "finite"), ([0, 1], [np.inf, 0.2], "finite")],
)
def test_invalid_inputs_raise_value_error(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        ranking_metrics([1, 1], [1, 2], labels, scores)


def test_invalid_lengths_and_ks():
    with pytest.raises(ValueError, match="same length"):
        ranking_metrics([1, 1], [1], [0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics([1, 1], [1, 2], [0, 1], [0.1, 0.2], recall_ks=(0,))


# -------------------------------------------------------------------------------------------- properties


@st.composite
def played_lists(draw, max_users=12, max_len=25):
    n_users = draw(st.integers(1, max_users))
    users, items, labels, scores = [], [], [], []
    for u in range(n_users):
        n = draw(st.integers(2, max_len))
        ys = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        first = draw(st.integers(0, n - 1))
        ys[first] = 1
        ys[(first + draw(st.integers(1, n - 1))) % n] = 0
        item_ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
        ss = draw(
            st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, -1.0]) | st.floats(-5, 5), min_size=n, max_size=n)
        )
        users += [u * 13] * n
        items += item_ids
        labels += ys
        scores += ss
    return np.array(users), np.array(items), np.array(labels), np.array(scores, dtype=float)


PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _values(m):
    return {k: v for k, v in m.as_dict().items() if k in SHEET_METRICS or k == "global_auc"}


@PROPS
@given(played_lists())
def test_values_lie_in_unit_interval(data):
    m = ranking_metrics(*data)
    assert m.n_users >= 1
    for name, value in _values(m).items():
        if value is not None:
            assert -1e-12 <= value <= 1 + 1e-12, name


@PROPS
@given(played_lists())
def test_perfect_ranking(data):
    users, items, labels, _ = data
    m = ranking_metrics(users, items, labels, labels + 0.0)
    for name in ("auc", "map", "ndcg@5", "ndcg@10", "avg_prec@10", "recall@all_pos"):
        assert m.values[name] == pytest.approx(1.0, abs=1e-12), name
    best_mrr = [
        sum(1 / i for i in range(1, r + 1)) / r for r in pd.Series(labels).groupby(users).sum().to_numpy()
    ]
    assert m.values["mrr"] == pytest.approx(np.mean(best_mrr), abs=1e-12)


@PROPS
@given(played_lists())
def test_reversed_ranking_gives_auc_zero(data):
    users, items, labels, _ = data
    assert ranking_metrics(users, items, labels, -labels + 0.0).values["auc"] == 0.0


@PROPS
@given(played_lists(), st.integers(0, 2**32 - 1))
def test_independent_of_row_and_user_order(data, seed):
    users, items, labels, scores = data
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(users))
    relabel = dict(zip(np.unique(users), rng.permutation(len(np.unique(users))) * 5 + 1, strict=True))
    new_users = np.array([relabel[u] for u in users])
    a = _values(ranking_metrics(users, items, labels, scores))
    b = _values(ranking_metrics(new_users[perm], items[perm], labels[perm], scores[perm]))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] is None) == (b[name] is None)
        if a[name] is not None:
            assert a[name] == pytest.approx(b[name], abs=1e-12), name


@PROPS
@given(played_lists(max_users=4, max_len=12))
def test_hypothesis_lists_match_reference(data):
    got = ranking_metrics(*data)
    assert_matches_reference(got, reference_metrics(*data))


# --------------------------------------------------------------------------------------------- baselines


def test_random_scores_are_seeded_and_uniform():
    a, b, c = random_scores(1000, seed=1), random_scores(1000, seed=1), random_scores(1000, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (1000,) and a.dtype == np.float64 and (a >= 0).all() and (a < 1).all()


def test_popularity_scores_from_mapping_series_and_frame():
    train_items = [5, 5, 5, 7, 9, 9]
    pop = item_popularity(train_items)
    assert pop.to_dict() == {5: 3, 9: 2, 7: 1}
    items = np.array([9, 5, 42, 7])
    expected = [2.0, 3.0, 0.0, 1.0]  # 42 never played in training: 0
    assert popularity_scores(items, pop).tolist() == expected
    assert popularity_scores(items, {5: 3, 9: 2, 7: 1}).tolist() == expected
    frame = pd.DataFrame({"item_id": [5, 9, 7], "plays": [3, 2, 1]})
    assert popularity_scores(items, frame).tolist() == expected


def test_baselines_behave_as_expected_on_random_lists():
    users, items, labels, _ = random_lists(9, 1000, max_len=40)
    rand = ranking_metrics(users, items, labels, random_scores(len(users), seed=0))
    assert rand.values["auc"] == pytest.approx(0.5, abs=0.03)
    # popularity that tracks the labels beats random
    pop = item_popularity(items[labels == 1])
    popm = ranking_metrics(users, items, labels, popularity_scores(items, pop))
    assert popm.values["auc"] > rand.values["auc"] + 0.05


def test_wide_user_ids_leave_few_score_bits_and_still_match_reference():
    # user ids spanning 2^39 leave 24 bits of the packed sort key for the score: many rows share a key
    # without sharing a score, and must be put in exact order by the second sort
    users, items, labels, scores = random_lists(13, 150, max_len=60)
    users = (users % 150) * (2**39 // 150)
    # scores equal in their leading bits but not equal (1e-7 apart), and genuine ties
    scores = np.round(scores, 1) + np.where(labels == 1, 0.0, 1e-7 * (items % 3))
    got = ranking_metrics(users, items, labels, scores)
    assert_matches_reference(got, reference_metrics(users, items, labels, scores))
