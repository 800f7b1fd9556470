"""The one sort behind the played re-ranking metrics: rows by (user, score descending, item id).

The sort packs the user code and the leading bits of the score into one 64-bit key; rows whose keys collide
(equal scores, or scores equal in their leading bits) are then put in exact (score, item id) order by a
second sort over those rows only. No Python loop over users.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_U64 = np.uint64
_SIGN = _U64(1 << 63)


def dense_user_codes(user_ids: np.ndarray) -> np.ndarray:
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
