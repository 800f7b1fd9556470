"""The sheet's ranking metrics on the played re-ranking set, as pure vectorised array functions.

Definitions: ``docs/metrics.md``. Input: one row per (user, item) with a binary label and a score. Every
metric is the unweighted mean over evaluated users (at least one positive and one negative row) of a
per-user value. Within a user, items are ranked by score descending, equal scores broken by the smaller
item id first; ``auc`` and ``map`` are scikit-learn's ``roc_auc_score`` / ``average_precision_score``,
which treat equal scores as one threshold (ties count one half in ``auc``).

Implementation, in three steps that follow ``docs/metrics.md``: (1) ``sorted_lists``: one sort of all rows by
(user, score descending, item id) (``ranking_sort.py``) and, per positive row, its user, rank and the tie
group it falls in; (2) one small segment reduction per metric (``bincount`` over the positives' users; no
Python loop over users); (3) ``ranking_metrics`` averages over the evaluated users and adds the counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twotower.evaluate.ranking_sort import dense_user_codes, sort_rows

AVG_PREC_KS: tuple[int, ...] = (10,)
NDCG_KS: tuple[int, ...] = (5, 10)
RECALL_KS: tuple[int, ...] = (5, 10, 50, 100)
RECALL_GT_NS: tuple[int, ...] = (5, 100)

LEFT_OUT_ALL_POSITIVE = "all positive"
LEFT_OUT_ALL_NEGATIVE = "all negative"

def metric_names(
    avg_prec_ks: Sequence[int] = AVG_PREC_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
    recall_ks: Sequence[int] = RECALL_KS,
    recall_gt_ns: Sequence[int] = RECALL_GT_NS,
) -> list[str]:
    """The metric names in the sheet's column order (with the default k and N: exactly the sheet's columns)."""
    return (
        ["auc"]
        + [f"avg_prec@{k}" for k in avg_prec_ks]
        + ["map", "mrr"]
        + [f"ndcg@{k}" for k in ndcg_ks]
        + [f"recall@{k}" for k in recall_ks]
        + [f"recall@gt_{n}" for n in recall_gt_ns]
        + ["recall@all_pos"]
    )


SHEET_METRICS: tuple[str, ...] = tuple(metric_names())


@dataclass(frozen=True)
class RankingMetrics:
    """Every metric of the sheet's table plus the counts behind them.

    ``values`` maps metric name (seed order) to its value, ``None`` when no user qualifies.
    """

    values: Mapping[str, float | None]
    global_auc: float | None
    n_users: int
    n_rows: int
    positive_share: float | None
    n_users_input: int
    n_rows_input: int
    users_left_out: Mapping[str, int]
    recall_gt_users: Mapping[str, int]
    per_user: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, name: str) -> float | None:
        return self.as_dict()[name]

    def as_dict(self) -> dict[str, Any]:
        """Metric name to value (``None`` = not available) plus the counts; JSON-ready."""
        out: dict[str, Any] = dict(self.values)
        out["global_auc"] = self.global_auc
        out["n_users"] = self.n_users
        out["n_rows"] = self.n_rows
        out["positive_share"] = self.positive_share
        for name, count in self.recall_gt_users.items():
            out[f"n_users_{name}"] = count
        out["n_users_input"] = self.n_users_input
        out["n_rows_input"] = self.n_rows_input
        out["n_users_left_out"] = sum(self.users_left_out.values())
        for reason, count in self.users_left_out.items():
            out[f"n_users_left_out_{reason.replace(' ', '_')}"] = count
        return out


# ----------------------------------------------------------------------------------------------- inputs


def _check_ks(name: str, ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if any(k < 1 for k in out) or any(k != k0 for k, k0 in zip(out, ks, strict=True)):
        raise ValueError(f"{name} must be positive integers, got {list(ks)}")
    return out


def _check_ns(name: str, ns: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(n) for n in ns)
    if any(n < 0 for n in out) or any(n != n0 for n, n0 in zip(out, ns, strict=True)):
        raise ValueError(f"{name} must be non-negative integers, got {list(ns)}")
    return out


def as_binary_labels(labels: Any) -> np.ndarray:
    """Labels as int8 0/1; ``ValueError`` for anything else (including missing values)."""
    y = np.asarray(labels)
    if y.dtype == bool:
        return y.astype(np.int8)
    if y.dtype.kind not in "iuf":
        raise ValueError(f"labels must be numeric 0/1, got dtype {y.dtype}")
    bad = (y != 0) & (y != 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"labels must be 0 or 1: {int(bad.sum())} other value(s), first {y[first]!r} at row {first}"
        )
    return y.astype(np.int8)


def as_finite_scores(scores: Any) -> np.ndarray:
    """Scores as float64; ``ValueError`` for NaN or infinite values."""
    s = np.asarray(scores)
    if s.dtype.kind not in "iufb":
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"scores must be finite: {int(bad.sum())} non-finite value(s), first {s[first]} at row {first}"
        )
    return s


# ------------------------------------------------------------------------------------------ the metrics


def _mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    if not mask.any():
        return None
    return float(values[mask].mean())


def global_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """``roc_auc_score`` over all rows pooled (ties count one half); ``None`` without both classes."""
    pos = np.sort(scores[labels == 1])
    neg = np.sort(scores[labels == 0])
    if not len(pos) or not len(neg):
        return None
    below = np.searchsorted(neg, pos, side="left").sum(dtype=np.float64)
    upto = np.searchsorted(neg, pos, side="right").sum(dtype=np.float64)
    return float((below + 0.5 * (upto - below)) / (float(len(pos)) * float(len(neg))))


@dataclass
class SortedLists:
    """Every user's list in rank order, seen through its positive rows (P of them, R users).

    ``order`` (N,) row order; ``starts`` (R,) first sorted row of each user; ``n``, ``r`` (R,) list length and
    positives per user. Per positive row, in sorted order: ``seg`` its user, ``pos`` its 1-based rank in the
    list, ``j`` its 1-based rank among the user's positives; ``pos_end``, ``j_end`` the same at the end of
    its group of tied scores, ``neg_in_group`` the negatives tied with it (None when no score is tied).
    """

    order: np.ndarray
    starts: np.ndarray
    n: np.ndarray
    r: np.ndarray
    seg: np.ndarray
    pos: np.ndarray
    j: np.ndarray
    pos_end: np.ndarray
    j_end: np.ndarray
    neg_in_group: np.ndarray | None

    @property
    def n_users(self) -> int:
        return len(self.starts)

    def per_user_sum(self, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Sum of a per-positive quantity (P,) over each user's positives -> (R,)."""
        if mask is None:
            return np.bincount(self.seg, weights=weights, minlength=self.n_users)
        return np.bincount(self.seg[mask], weights=weights[mask], minlength=self.n_users)

    def per_user_count(self, mask: np.ndarray) -> np.ndarray:
        """Positives per user for which ``mask`` (P,) holds -> (R,)."""
        return np.bincount(self.seg[mask], minlength=self.n_users)


def sorted_lists(codes: np.ndarray, items: np.ndarray, y_in: np.ndarray, s_in: np.ndarray) -> SortedLists:
    """Sort the rows (user code, item id, label, score; (N,) each) and locate every positive row."""
    n_rows = len(s_in)
    if n_rows == 0:
        order, starts, tied = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    else:
        order, skey, score_bits, tied = sort_rows(codes, items, s_in)
        user_sorted = skey >> np.uint64(score_bits)
        del skey
        new_user = np.empty(n_rows, dtype=bool)
        new_user[0] = True
        np.not_equal(user_sorted[1:], user_sorted[:-1], out=new_user[1:])
        del user_sorted
        starts = np.flatnonzero(new_user)
        del new_user
    y = y_in[order]
    n = np.diff(np.append(starts, n_rows))  # list length per user
    r = np.add.reduceat(y, starts, dtype=np.int64) if len(starts) else np.zeros(0, np.int64)

    # positive rows in sorted order: their user, rank (pos) within the user, and rank among its positives (j)
    pidx = np.flatnonzero(y)
    seg = np.repeat(np.arange(len(starts)), r)
    pstart = np.cumsum(r) - r
    ustart = starts[seg]
    pos = pidx - ustart + 1
    j = np.arange(len(pidx)) - pstart[seg] + 1

    # equal scores within a user: the group of tied rows a positive row belongs to ([gs, ge], sorted rows)
    if tied.any():
        gstarts = np.flatnonzero(~tied)
        gi = np.searchsorted(gstarts, pidx, side="right") - 1
        gs = gstarts[gi]
        ge = np.append(gstarts, n_rows)[gi + 1] - 1
        del gstarts, gi
        pos_end = ge - ustart + 1  # rank of the tie group's last row
        j_end = np.searchsorted(pidx, ge, side="right") - pstart[seg]  # positives up to the group's end
        neg_before = (gs - ustart) - (np.searchsorted(pidx, gs, side="left") - pstart[seg])
        neg_in_group = (pos_end - j_end) - neg_before
    else:
        pos_end, j_end, neg_in_group = pos, j, None
    return SortedLists(order, starts, n, r, seg, pos, j, pos_end, j_end, neg_in_group)


# Per-user values, one function per metric of docs/metrics.md; each returns (R,) (NaN/inf where undefined).


def per_user_auc(lists: SortedLists) -> np.ndarray:
    """For each positive, the negatives ranked strictly below its tie group plus half those tied with it,
    over (positives x negatives)."""
    neg_after = (lists.n - lists.r)[lists.seg] - (lists.pos_end - lists.j_end)
    pairs = neg_after.astype(np.float64)
    if lists.neg_in_group is not None:
        pairs += 0.5 * lists.neg_in_group
    return lists.per_user_sum(pairs) / (lists.r.astype(np.float64) * (lists.n - lists.r).astype(np.float64))


def per_user_map(lists: SortedLists) -> np.ndarray:
    """scikit-learn's step-wise AP: mean over positives of the precision at their tie group's end."""
    return lists.per_user_sum(lists.j_end / lists.pos_end) / lists.r.astype(np.float64)


def per_user_mrr(lists: SortedLists) -> np.ndarray:
    """MIND's mrr: mean over all positives of 1 / rank."""
    return lists.per_user_sum(1.0 / lists.pos) / lists.r.astype(np.float64)


def per_user_avg_prec(lists: SortedLists, k: int) -> np.ndarray:
    """(1 / min(r, k)) * sum over positives in the top k of the precision at their rank."""
    prec = lists.j * (1.0 / lists.pos)
    return lists.per_user_sum(prec, lists.pos <= k) / np.minimum(lists.r, k)


def per_user_ndcg(lists: SortedLists, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Binary-gain DCG@k over the ideal DCG@k (min(r, k) hits at the top), for every k in ``ks``."""
    kmax = max(ks, default=0)
    if not kmax:
        return {}
    # ideal DCG@k = sum_{i <= min(r, k)} 1 / log2(i + 1): cumulative discounts, index = count
    ideal = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, kmax + 2)))))
    top = lists.pos <= kmax
    gain, seg_k, pos_k = 1.0 / np.log2(lists.pos[top] + 1.0), lists.seg[top], lists.pos[top]
    out = {}
    for k in ks:
        m = pos_k <= k
        out[k] = np.bincount(seg_k[m], weights=gain[m], minlength=lists.n_users) / ideal[np.minimum(lists.r, k)]
    return out


def per_user_recall(lists: SortedLists, k: int) -> np.ndarray:
    """Positives in the top k over min(k, r)."""
    return lists.per_user_count(lists.pos <= k) / np.minimum(lists.r, k)


def per_user_recall_all_pos(lists: SortedLists) -> np.ndarray:
    """R-precision: positives in the top r over r."""
    return lists.per_user_count(lists.pos <= lists.r[lists.seg]) / lists.r.astype(np.float64)


def ranking_metrics(
    user_ids: Any,
    item_ids: Any,
    labels: Any,
    scores: Any,
    *,
    avg_prec_ks: Sequence[int] = AVG_PREC_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
    recall_ks: Sequence[int] = RECALL_KS,
    recall_gt_ns: Sequence[int] = RECALL_GT_NS,
    per_user: bool = False,
) -> RankingMetrics:
    """All metrics of the sheet's table for one scored re-ranking set (see the module docstring).

    Inputs (N,) each. ``per_user=True`` also returns a table with one row per input user: ``user_id``,
    ``n``, ``n_pos``, ``status`` ("evaluated" or why left out) and every per-user metric value (NaN where not
    evaluated).
    """
    avg_prec_ks = _check_ks("avg_prec_ks", avg_prec_ks)
    ndcg_ks = _check_ks("ndcg_ks", ndcg_ks)
    recall_ks = _check_ks("recall_ks", recall_ks)
    recall_gt_ns = _check_ns("recall_gt_ns", recall_gt_ns)
    users, items, y_in, s_in = _check_inputs(user_ids, item_ids, labels, scores)
    lists = sorted_lists(dense_user_codes(users), items, y_in, s_in)

    with np.errstate(divide="ignore", invalid="ignore"):
        per: dict[str, np.ndarray] = {"auc": per_user_auc(lists), "map": per_user_map(lists)}
        per["mrr"] = per_user_mrr(lists)
        for k in avg_prec_ks:
            per[f"avg_prec@{k}"] = per_user_avg_prec(lists, k)
        for k, values in per_user_ndcg(lists, ndcg_ks).items():
            per[f"ndcg@{k}"] = values
        for k in recall_ks:
            per[f"recall@{k}"] = per_user_recall(lists, k)
        per["recall@all_pos"] = per_user_recall_all_pos(lists)
    names = metric_names(avg_prec_ks, ndcg_ks, recall_ks, recall_gt_ns)
    return _assemble(lists, per, names, users, y_in, s_in, per_user)


def _check_inputs(user_ids: Any, item_ids: Any, labels: Any, scores: Any) -> tuple[np.ndarray, ...]:
    users, items = np.asarray(user_ids), np.asarray(item_ids)
    y_in, s_in = as_binary_labels(labels), as_finite_scores(scores)
    if not (users.ndim == items.ndim == y_in.ndim == s_in.ndim == 1):
        raise ValueError("user_ids, item_ids, labels and scores must be one-dimensional")
    if not (len(users) == len(items) == len(y_in) == len(s_in)):
        raise ValueError(
            f"user_ids, item_ids, labels and scores must have the same length, got "
            f"{len(users)}, {len(items)}, {len(y_in)}, {len(s_in)}"
        )
    if items.dtype.kind not in "iufbUSO":
        raise ValueError(f"item ids must be numbers or strings, got dtype {items.dtype}")
    if items.dtype.kind == "O" and pd.isna(items).any():
        raise ValueError("item ids must not be missing")
    return users, items, y_in, s_in


def _assemble(
    lists: SortedLists,
    per: dict[str, np.ndarray],
    names: list[str],
    users: np.ndarray,
    y_in: np.ndarray,
    s_in: np.ndarray,
    per_user: bool,
) -> RankingMetrics:
    """Means over the evaluated users (at least one positive and one negative), counts, optional table."""
    n, r = lists.n, lists.r
    evaluated = (r > 0) & (r < n)
    values: dict[str, float | None] = {}
    gt_users: dict[str, int] = {}
    for name in names:
        if name.startswith("recall@gt_"):
            big = evaluated & (n > int(name.removeprefix("recall@gt_")))
            gt_users[name] = int(big.sum())
            values[name] = _mean(per["recall@all_pos"], big)
        else:
            values[name] = _mean(per[name], evaluated)

    n_users = int(evaluated.sum())
    n_rows = int(n[evaluated].sum())
    g_auc = None
    if n_users:
        if n_users == lists.n_users:
            g_auc = global_auc(y_in, s_in)
        else:
            keep = lists.order[np.repeat(evaluated, n)]  # the evaluated rows (in sorted order)
            g_auc = global_auc(y_in[keep], s_in[keep])

    table = None
    if per_user:
        status = np.full(lists.n_users, "evaluated", dtype=object)
        status[r == n] = LEFT_OUT_ALL_POSITIVE
        status[r == 0] = LEFT_OUT_ALL_NEGATIVE
        cols: dict[str, Any] = {"user_id": users[lists.order[lists.starts]], "n": n, "n_pos": r, "status": status}
        for name in names:
            if not name.startswith("recall@gt_"):
                cols[name] = np.where(evaluated, per[name], np.nan)
        table = pd.DataFrame(cols)

    return RankingMetrics(
        values=values,
        global_auc=g_auc,
        n_users=n_users,
        n_rows=n_rows,
        positive_share=int(r[evaluated].sum()) / n_rows if n_rows else None,
        n_users_input=lists.n_users,
        n_rows_input=len(s_in),
        users_left_out={
            LEFT_OUT_ALL_POSITIVE: int(((r == n) & (n > 0)).sum()),
            LEFT_OUT_ALL_NEGATIVE: int((r == 0).sum()),
        },
        recall_gt_users=gt_users,
        per_user=table,
    )


def mean_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """The table's ``auc`` (mean over users with both labels of their ROC AUC) and the user count, for rows
    (N,) each; NaN when no user qualifies. Early stopping uses it, so training and reporting agree."""
    result = ranking_metrics(users, np.arange(len(users)), (np.asarray(labels) > 0).astype(np.int8), scores)
    auc = result.values["auc"]
    return (float("nan") if auc is None else float(auc)), result.n_users
