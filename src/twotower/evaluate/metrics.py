"""The seed's ranking metrics on the played re-ranking set, as pure vectorised array functions.

Definitions: ``docs/metrics.md``. Input: one row per (user, item) with a binary label and a score. Every
metric is the unweighted mean over evaluated users (at least one positive and one negative row) of a
per-user value. Within a user, items are ranked by score descending, equal scores broken by the smaller
item id first; ``auc`` and ``map`` are scikit-learn's ``roc_auc_score`` / ``average_precision_score``,
which treat equal scores as one threshold (ties count one half in ``auc``).

Implementation: one sort of all rows by (user, score descending, item id), then segment operations
(cumulative sums, ``bincount``, ``searchsorted``) over the sorted rows; no Python loop over users. The sort
packs the user code and the leading bits of the score into one 64-bit key; rows whose keys collide (equal
scores, or scores equal in their leading bits) are then put in exact (score, item id) order by a second
sort over those rows only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

AVG_PREC_KS: tuple[int, ...] = (10,)
NDCG_KS: tuple[int, ...] = (5, 10)
RECALL_KS: tuple[int, ...] = (5, 10, 50, 100)
RECALL_GT_NS: tuple[int, ...] = (5, 100)

LEFT_OUT_ALL_POSITIVE = "all positive"
LEFT_OUT_ALL_NEGATIVE = "all negative"

_U64 = np.uint64
_SIGN = _U64(1 << 63)


def metric_names(
    avg_prec_ks: Sequence[int] = AVG_PREC_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
    recall_ks: Sequence[int] = RECALL_KS,
    recall_gt_ns: Sequence[int] = RECALL_GT_NS,
) -> list[str]:
    """The metric names in the seed's column order (with the default k and N: exactly the seed's columns)."""
    return (
        ["auc"]
        + [f"avg_prec@{k}" for k in avg_prec_ks]
        + ["map", "mrr"]
        + [f"ndcg@{k}" for k in ndcg_ks]
        + [f"recall@{k}" for k in recall_ks]
        + [f"recall@gt_{n}" for n in recall_gt_ns]
        + ["recall@all_pos"]
    )


SEED_METRICS: tuple[str, ...] = tuple(metric_names())


@dataclass(frozen=True)
class RankingMetrics:
    """Every metric of the seed's table plus the counts behind them.

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


def _user_codes(user_ids: np.ndarray) -> np.ndarray:
    """Non-negative int64 codes, equal for equal user ids (the code's order does not matter)."""
    if user_ids.dtype.kind in "iu" and len(user_ids):
        lo, hi = int(user_ids.min()), int(user_ids.max())
        if hi - lo < 1 << 40:
            return user_ids.astype(np.int64) - lo if lo else user_ids.astype(np.int64, copy=False)
    if user_ids.dtype.kind == "b":
        return user_ids.astype(np.int64)
    codes, _ = pd.factorize(user_ids, use_na_sentinel=True)
    if len(codes) and codes.min() < 0:
        raise ValueError("user ids must not be missing")
    return codes.astype(np.int64, copy=False)


def _descending_key(scores: np.ndarray) -> np.ndarray:
    """uint64 whose ascending order is the scores' descending order (scores finite, -0.0 == 0.0)."""
    bits = (scores + 0.0).view(_U64)  # + 0.0 turns -0.0 into 0.0 (and copies)
    sign = bits >> _U64(63)
    # ascending key = bits ^ (sign ? all ones : sign bit); descending key = its complement
    mask = np.subtract(_U64(0), sign)
    mask |= _SIGN
    np.invert(mask, out=mask)
    bits ^= mask
    return bits


def _dense_codes(values: np.ndarray) -> np.ndarray:
    """Non-negative int64 codes that keep the order of ``values`` (equal values, equal codes)."""
    if values.dtype.kind in "iub" and len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < 1 << 40:
            return values.astype(np.int64) - lo
    return np.unique(values, return_inverse=True)[1].astype(np.int64).ravel()


def _order_runs(rows: np.ndarray, run_id: np.ndarray, item_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``rows`` (runs of equal packed key, contiguous, run ids ascending) in (score desc, item id) order."""
    sc = scores[rows]
    codes = _dense_codes(item_ids[rows])
    run_bits = int(run_id[-1]).bit_length()
    item_bits = max(1, int(codes.max()).bit_length())
    out = np.empty_like(rows)
    differs = (run_id[1:] == run_id[:-1]) & (sc[1:] != sc[:-1])
    mixed_run = np.zeros(
        int(run_id[-1]) + 1, dtype=bool
    )  # runs of different exact scores (equal leading bits)
    mixed_run[run_id[1:][differs]] = True
    mixed = mixed_run[run_id]
    if run_bits + item_bits > 63:
        mixed[:] = True
    if mixed.any():
        # full order (the row number last: duplicate (user, item, score) rows in a fixed order)
        m = np.flatnonzero(mixed)
        out[m] = rows[m][np.lexsort((rows[m], codes[m], -sc[m], run_id[m]))]
    if not mixed.all():
        # runs of one exact score (genuine ties, the usual case): order by (run, item id)
        p = np.flatnonzero(~mixed)
        key = run_id[p].astype(np.int64) << item_bits
        key |= codes[p]
        out[p] = rows[p][np.argsort(key)]
    return out


def sort_rows(
    user_codes: np.ndarray, item_ids: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Row order by (user, score descending, item id).

    Returns the order, the sorted packed keys (user code in the top bits), the number of score bits in
    the key, and ``tied``: for each sorted row, whether it has the same user and exact score as the row
    before it.
    """
    n = len(scores)
    user_bits = max(1, int(user_codes.max()).bit_length()) if n else 1
    score_bits = 64 - user_bits
    key = _descending_key(scores)
    key >>= _U64(user_bits)
    key |= user_codes.astype(_U64) << _U64(score_bits)
    order = np.argsort(key)
    skey = key[order]
    del key
    same = skey[1:] == skey[:-1]
    tied = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(same)
    if len(idx):
        # runs of equal keys: put them in exact (score desc, item asc) order; run ids keep runs in place
        in_run = np.zeros(n, dtype=bool)
        in_run[1:] = same
        in_run[:-1] |= same
        del same
        idx = np.flatnonzero(in_run)
        del in_run
        run_start = np.ones(len(idx), dtype=bool)
        run_start[1:] = skey[idx[1:]] != skey[idx[1:] - 1]
        run_id = np.cumsum(run_start)
        rows = _order_runs(order[idx], run_id, item_ids, scores)
        order[idx] = rows
        sc = scores[rows]
        tied[idx[1:]] = ~run_start[1:] & (sc[1:] == sc[:-1])
    return order, skey, score_bits, tied


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
    """All metrics of the seed's table for one scored re-ranking set (see the module docstring).

    ``per_user=True`` also returns a table with one row per input user: ``user_id``, ``n``, ``n_pos``,
    ``status`` ("evaluated" or why left out) and every per-user metric value (NaN where not evaluated).
    """
    avg_prec_ks = _check_ks("avg_prec_ks", avg_prec_ks)
    ndcg_ks = _check_ks("ndcg_ks", ndcg_ks)
    recall_ks = _check_ks("recall_ks", recall_ks)
    recall_gt_ns = _check_ns("recall_gt_ns", recall_gt_ns)
    users = np.asarray(user_ids)
    items = np.asarray(item_ids)
    y_in = as_binary_labels(labels)
    s_in = as_finite_scores(scores)
    n_rows_input = len(s_in)
    if not (users.ndim == items.ndim == y_in.ndim == s_in.ndim == 1):
        raise ValueError("user_ids, item_ids, labels and scores must be one-dimensional")
    if not (len(users) == len(items) == len(y_in) == n_rows_input):
        raise ValueError(
            f"user_ids, item_ids, labels and scores must have the same length, got "
            f"{len(users)}, {len(items)}, {len(y_in)}, {n_rows_input}"
        )
    if items.dtype.kind not in "iufbUSO":
        raise ValueError(f"item ids must be numbers or strings, got dtype {items.dtype}")
    if items.dtype.kind == "O" and pd.isna(items).any():
        raise ValueError("item ids must not be missing")

    codes = _user_codes(users)
    if n_rows_input == 0:
        order = np.zeros(0, dtype=np.int64)
        starts = np.zeros(0, dtype=np.int64)
        tied = np.zeros(0, dtype=bool)
    else:
        order, skey, score_bits, tied = sort_rows(codes, items, s_in)
        user_sorted = skey >> _U64(score_bits)
        del skey
        new_user = np.empty(n_rows_input, dtype=bool)
        new_user[0] = True
        np.not_equal(user_sorted[1:], user_sorted[:-1], out=new_user[1:])
        del user_sorted
        starts = np.flatnonzero(new_user)
        del new_user
    y = y_in[order]
    n_users_input = len(starts)
    n = np.diff(np.append(starts, n_rows_input))  # list length per user
    r = np.add.reduceat(y, starts, dtype=np.int64) if n_users_input else np.zeros(0, np.int64)

    # positive rows in sorted order: their user, rank (pos) within the user, and rank among its positives (j)
    pidx = np.flatnonzero(y)
    seg = np.repeat(np.arange(n_users_input), r)
    pstart = np.cumsum(r) - r
    ustart = starts[seg]
    pos = pidx - ustart + 1
    j = np.arange(len(pidx)) - pstart[seg] + 1

    # equal scores within a user: the group of tied rows a positive row belongs to ([gs, ge], sorted rows)
    if tied.any():
        gstarts = np.flatnonzero(~tied)
        gi = np.searchsorted(gstarts, pidx, side="right") - 1
        gs = gstarts[gi]
        ge = np.append(gstarts, n_rows_input)[gi + 1] - 1
        del gstarts, gi
        pos_end = ge - ustart + 1  # rank of the tie group's last row
        j_end = np.searchsorted(pidx, ge, side="right") - pstart[seg]  # positives up to the group's end
        neg_before = (gs - ustart) - (np.searchsorted(pidx, gs, side="left") - pstart[seg])
        neg_in_group = (pos_end - j_end) - neg_before
        del gs, ge, neg_before
    else:
        pos_end, j_end, neg_in_group = pos, j, None
    del tied

    nu = n_users_input

    def per_user_sum(weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            return np.bincount(seg, weights=weights, minlength=nu)
        return np.bincount(seg[mask], weights=weights[mask], minlength=nu)

    with np.errstate(divide="ignore", invalid="ignore"):
        r_f = r.astype(np.float64)
        neg_total = (n - r).astype(np.float64)
        # auc: for each positive, the negatives ranked strictly below its tie group, plus half those tied
        neg_after = (n - r)[seg] - (pos_end - j_end)
        pairs = neg_after.astype(np.float64)
        if neg_in_group is not None:
            pairs += 0.5 * neg_in_group
        del neg_after
        per: dict[str, np.ndarray] = {}
        per["auc"] = per_user_sum(pairs) / (r_f * neg_total)
        del pairs
        # map: scikit-learn's step-wise AP = mean over positives of the precision at their tie group's end
        per["map"] = per_user_sum(j_end / pos_end) / r_f
        del pos_end, j_end, neg_in_group
        inv_pos = 1.0 / pos
        per["mrr"] = per_user_sum(inv_pos) / r_f
        prec = j * inv_pos  # precision at the rank of each positive
        for k in avg_prec_ks:
            per[f"avg_prec@{k}"] = per_user_sum(prec, pos <= k) / np.minimum(r, k)
        del prec, inv_pos
        kmax = max(ndcg_ks, default=0)
        if kmax:
            # ideal DCG@k = sum_{i <= min(r, k)} 1 / log2(i + 1): cumulative discounts, index = count
            ideal = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, kmax + 2)))))
            gain = 1.0 / np.log2(pos[pos <= kmax] + 1.0)
            seg_k, pos_k = seg[pos <= kmax], pos[pos <= kmax]
            for k in ndcg_ks:
                m = pos_k <= k
                dcg = np.bincount(seg_k[m], weights=gain[m], minlength=nu)
                per[f"ndcg@{k}"] = dcg / ideal[np.minimum(r, k)]
            del gain, seg_k, pos_k
        for k in recall_ks:
            per[f"recall@{k}"] = np.bincount(seg[pos <= k], minlength=nu) / np.minimum(r, k)
        all_pos = np.bincount(seg[pos <= r[seg]], minlength=nu) / r_f
        per["recall@all_pos"] = all_pos

    evaluated = (r > 0) & (r < n)
    values: dict[str, float | None] = {}
    gt_users: dict[str, int] = {}
    names = metric_names(avg_prec_ks, ndcg_ks, recall_ks, recall_gt_ns)
    for name in names:
        if name.startswith("recall@gt_"):
            big = evaluated & (n > int(name.removeprefix("recall@gt_")))
            gt_users[name] = int(big.sum())
            values[name] = _mean(all_pos, big)
        else:
            values[name] = _mean(per[name], evaluated)

    n_users = int(evaluated.sum())
    n_rows = int(n[evaluated].sum())
    pos_rows = int(r[evaluated].sum())
    g_auc = None
    if n_users:
        if n_users == n_users_input:
            g_auc = global_auc(y_in, s_in)
        else:
            keep = order[np.repeat(evaluated, n)]  # the evaluated rows (in sorted order)
            g_auc = global_auc(y_in[keep], s_in[keep])

    table = None
    if per_user:
        status = np.full(nu, "evaluated", dtype=object)
        status[r == n] = LEFT_OUT_ALL_POSITIVE
        status[r == 0] = LEFT_OUT_ALL_NEGATIVE
        cols: dict[str, Any] = {"user_id": users[order[starts]], "n": n, "n_pos": r, "status": status}
        for name in names:
            if not name.startswith("recall@gt_"):
                cols[name] = np.where(evaluated, per[name], np.nan)
        table = pd.DataFrame(cols)

    return RankingMetrics(
        values=values,
        global_auc=g_auc,
        n_users=n_users,
        n_rows=n_rows,
        positive_share=pos_rows / n_rows if n_rows else None,
        n_users_input=n_users_input,
        n_rows_input=n_rows_input,
        users_left_out={
            LEFT_OUT_ALL_POSITIVE: int(((r == n) & (n > 0)).sum()),
            LEFT_OUT_ALL_NEGATIVE: int((r == 0).sum()),
        },
        recall_gt_users=gt_users,
        per_user=table,
    )

