"""Catalog retrieval metrics (docs/retrieval.md) as pure vectorised array functions.

Input: each user's top list of item ids in rank order (``topk (U, K_max)``, -1 padding, as
``ItemIndex.search`` returns it) and each user's target items (``ItemSets``). Accuracy metrics are the
unweighted mean over evaluated users (at least one target) of a per-user value; the beyond-accuracy
metrics describe the evaluated users' top ``beyond_k`` lists together. Implementation: target membership
of every list entry by one ``searchsorted`` over packed (user, item) keys, then cumulative sums along the
rank axis; no Python loop over users (``diversity`` runs over chunks of users to bound memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twotower.retrieval.sets import ItemSets

DEFAULT_KS: tuple[int, ...] = (10, 50, 100, 500)
BEYOND_K = 100
#: floats of gathered content vectors held at once by ``diversity`` (64 MiB)
VECTOR_BUDGET = 1 << 24


@dataclass(frozen=True)
class CatalogMetrics:
    """Catalog metrics of one scorer on one set (or slice) of users, with the counts behind them.

    ``values`` maps metric name to value, ``None`` when not available (no qualifying user, or the input it
    needs was not given). ``tail_users`` / ``tail_targets``: per tail label, the users with a tail target
    (those behind ``tail_recall@K[label]``) and the tail targets they have.
    """

    values: Mapping[str, float | None]
    n_users: int
    n_users_input: int
    n_users_no_target: int
    n_targets: int
    tail_users: Mapping[str, int]
    tail_targets: Mapping[str, int]
    n_catalog: int | None
    n_items_recommended: int
    beyond_k: int
    per_user: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    def __getitem__(self, name: str) -> float | None:
        return self.values[name]

    def as_dict(self) -> dict[str, Any]:
        """Metric name to value (``None`` = not available) plus every count; JSON-ready."""
        out: dict[str, Any] = dict(self.values)
        out["n_users"] = self.n_users
        out["n_users_input"] = self.n_users_input
        out["n_users_no_target"] = self.n_users_no_target
        out["n_targets"] = self.n_targets
        for label, count in self.tail_users.items():
            out[f"n_users_tail[{label}]"] = count
            out[f"n_targets_tail[{label}]"] = self.tail_targets[label]
        out["n_catalog"] = self.n_catalog
        out[f"n_items@{self.beyond_k}"] = self.n_items_recommended
        return out


def tail_item_sets(catalog_ids: Any, item_plays: Any, thresholds: Sequence[int]) -> dict[str, np.ndarray]:
    """Tail items per threshold t: the catalog items with fewer than t training-window plays, labelled
    ``"plays<t"`` (the label used in ``tail_recall@K[plays<t]``)."""
    ids = np.asarray(catalog_ids, dtype=np.int64)
    plays = np.asarray(item_plays)
    if plays.shape != ids.shape:
        raise ValueError(f"item_plays has shape {plays.shape}, catalog_ids {ids.shape}: one count per item")
    return {f"plays<{t}": ids[plays < t] for t in thresholds}


def play_percentiles(item_plays: Any) -> np.ndarray:
    """Mid-rank percentile (0–100) of each catalog item's plays within the catalog, ``(C,) float64``:
    100 · (#items with fewer plays + ½ · #items with as many plays) / C, which is
    ``scipy.stats.percentileofscore(plays, p, kind="mean")``. Items never played share one low value."""
    plays = np.asarray(item_plays, dtype=np.float64)
    srt = np.sort(plays)
    below = np.searchsorted(srt, plays, side="left")
    upto = np.searchsorted(srt, plays, side="right")
    return 100.0 * (below + 0.5 * (upto - below)) / max(len(plays), 1)


def gini(counts: Any) -> float | None:
    """Gini index of non-negative counts (zeros included): Σ_i (2i − n − 1) c_(i) / (n Σ c) over the counts
    sorted ascending (i = 1..n); 0 when all are equal, (n − 1)/n when one item has everything."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(c), float(c.sum())
    if not n or total <= 0:
        return None
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * c).sum() / (n * total))


# ----------------------------------------------------------------------------------------------- inputs


def _check_topk(topk: Any, n_rows: int, width: int) -> np.ndarray:
    top = np.asarray(topk)
    if top.ndim != 2 or top.shape[0] != n_rows or (top.size and top.dtype.kind not in "iu"):
        raise ValueError(
            f"topk must be an integer (users, K) array with {n_rows} rows, got {top.shape} {top.dtype}"
        )
    if top.shape[1] < width:
        raise ValueError(
            f"topk has {top.shape[1]} columns, fewer than the largest K = {width}; "
            f"search with k >= {width} (short lists are padded with -1)"
        )
    top = top.astype(np.int64, copy=False)
    if top.size and top.min() < -1:
        raise ValueError("topk item ids must be non-negative, with -1 as padding")
    srt = np.sort(top, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"topk row {row} lists an item more than once")
    return top


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values by one sort (numpy 2.4's hash-based ``np.unique`` is far slower on large
    int64 arrays: 15 s against 0.65 s for 1M ids, measured)."""
    srt = np.sort(values, axis=None)
    keep = np.ones(len(srt), dtype=bool)
    np.not_equal(srt[1:], srt[:-1], out=keep[1:])
    return srt[keep]


def _index_of(universe: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Position in ``universe`` (distinct int64 ids) of each entry of ``probe`` (any shape), -1 if absent."""
    if not len(universe):
        return np.full(probe.shape, -1, dtype=np.int64)
    lo, hi = int(universe.min()), int(universe.max())
    if hi - lo < 4 * len(universe) + (1 << 20):  # compact ids (the usual case): a direct table
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[universe - lo] = np.arange(len(universe))
        inside = (probe >= lo) & (probe <= hi)
        return np.where(inside, table[np.clip(probe - lo, 0, hi - lo)], -1)
    sorter = np.argsort(universe)
    srt = universe[sorter]
    at = np.minimum(np.searchsorted(srt, probe), len(srt) - 1)
    return np.where(srt[at] == probe, sorter[at], -1)


# ------------------------------------------------------------------------------------------ the metrics


def _diversity(pos: np.ndarray, valid: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """1 − mean pairwise cosine similarity within each list, ``(U,) float64``, NaN with under 2 items.

    Σ_{i≠j} cos(v_i, v_j) = ‖Σ_i v̂_i‖² − Σ_i ‖v̂_i‖² with unit vectors v̂ (a zero vector stays zero: its
    similarity to anything counts 0), so no (K, K) matrix is formed; users are taken in chunks.
    """
    x = np.asarray(item_vectors)
    if x.dtype.kind != "f":  # float32 content vectors stay float32 (memory); sums are float64
        x = x.astype(np.float64)
    # unit vectors of the listed items only (the catalog's vectors may be large)
    listed = np.zeros(len(x), dtype=bool)
    listed[pos[valid]] = True
    used = np.flatnonzero(listed)
    if not len(used):
        return np.full(len(pos), np.nan)
    pos = (np.cumsum(listed) - 1)[pos]
    x = x[used]
    norms = np.sqrt(np.einsum("id,id->i", x, x, dtype=np.float64))[:, None].astype(x.dtype)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    n_users, width = pos.shape
    m = valid.sum(axis=1).astype(np.float64)
    out = np.full(n_users, np.nan)
    step = max(1, VECTOR_BUDGET // max(1, width * x.shape[1]))
    for start in range(0, n_users, step):
        p, v = pos[start : start + step], valid[start : start + step]
        vec = unit[np.minimum(p, len(used) - 1)] * v[:, :, None]  # (chunk, width, dv), padding rows zero
        total = vec.sum(axis=1, dtype=np.float64)
        self_sim = np.einsum("ukd,ukd->u", vec, vec, dtype=np.float64)
        pairs = (total * total).sum(axis=1) - self_sim
        mu = m[start : start + step]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + step] = np.where(mu >= 2, 1.0 - pairs / (mu * (mu - 1)), np.nan)
    return out


def _mean(values: np.ndarray) -> float | None:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else None


def catalog_metrics(
    topk: Any,
    targets: ItemSets,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    tail_items: Mapping[str, Any] | None = None,
    catalog_ids: Any = None,
    item_plays: Any = None,
    item_vectors: Any = None,
    beyond_k: int = BEYOND_K,
    users_mask: Any = None,
    user_ids: Any = None,
    per_user: bool = False,
) -> CatalogMetrics:
    """Every catalog metric of docs/retrieval.md for one scorer.

    topk: ``(U, K_max) int64`` item ids per user in rank order, -1 padding, no item twice in a row,
        ``K_max >= max(ks, beyond_k)``. targets: ``ItemSets`` with U rows (duplicates count once).
    tail_items: label -> item ids of that tail (``tail_item_sets``); gives ``tail_recall@K[label]``.
    catalog_ids ``(C,)``: gives ``coverage@{beyond_k}`` and ``gini@{beyond_k}`` (every listed item must be
        in it); with ``item_plays (C,)`` (training-window plays, aligned with catalog_ids)
        ``popularity@{beyond_k}``; with ``item_vectors (C, dv)`` (content vectors) ``diversity@{beyond_k}``.
    users_mask ``(U,) bool``: evaluate only these users (a slice: warm, cold); user_ids ``(U,)`` label
        the rows of the per-user table (default 0..U-1).
    per_user: also return a table with one row per evaluated user: ``user_id``, ``n_targets`` and every
        per-user value (``tail_recall@K[label]`` NaN for a user with no tail target).
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or beyond_k < 1:
        raise ValueError(f"ks and beyond_k must be positive integers, got {list(ks)}, {beyond_k}")
    top = _check_topk(topk, targets.n_rows, max(*ks, beyond_k))
    uids = np.arange(targets.n_rows) if user_ids is None else np.asarray(user_ids)
    if len(uids) != targets.n_rows:
        raise ValueError(f"user_ids has {len(uids)} entries for {targets.n_rows} users")
    if users_mask is not None:
        mask = np.asarray(users_mask, dtype=bool)
        if mask.shape != (targets.n_rows,):
            raise ValueError(f"users_mask must have one entry per user ({targets.n_rows}), got {mask.shape}")
        top, targets, uids = top[mask], targets.take(mask), uids[mask]
    if len(targets.items) and targets.items.min() < 0:
        raise ValueError("target item ids must be non-negative")
    n_input = targets.n_rows

    # targets as unique (row, item code) keys, sorted; users without a target are left out (counted)
    vocab = _unique(targets.items)
    width = np.int64(max(len(vocab), 1))
    keys = _unique(targets.rows() * width + np.searchsorted(vocab, targets.items))
    n_t_all = np.bincount(keys // width, minlength=n_input)
    evaluated = n_t_all > 0
    renumber = np.cumsum(evaluated) - 1
    t_rows, t_codes = renumber[keys // width], keys % width
    t_items = vocab[t_codes]
    keys = t_rows * width + t_codes  # still sorted: the renumbering keeps the row order
    top, uids, n_t = top[evaluated], uids[evaluated], n_t_all[evaluated]
    nu = len(n_t)

    # hit[u, i]: the item at rank i + 1 of user u is one of u's targets
    kmax = max(ks)
    head = top[:, :kmax]
    code = _index_of(vocab, head)
    probe = np.arange(nu, dtype=np.int64)[:, None] * width + code
    at = np.minimum(np.searchsorted(keys, probe), max(len(keys) - 1, 0))
    hit = (code >= 0) & (keys[at] == probe) if len(keys) else np.zeros(head.shape, dtype=bool)
    del code, probe, at
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))  # ideal[j]: DCG of j hits at the top
    n_hits = np.cumsum(hit, axis=1, dtype=np.int64)
    dcg = np.cumsum(hit * discount, axis=1)
    per: dict[str, np.ndarray] = {}
    for k in ks:
        per[f"recall@{k}"] = n_hits[:, k - 1] / n_t
    for k in ks:
        per[f"hit@{k}"] = (n_hits[:, k - 1] > 0).astype(np.float64)
    for k in ks:
        per[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[np.minimum(n_t, k)]
    del n_hits, dcg

    tail_users: dict[str, int] = {}
    tail_targets: dict[str, int] = {}
    for label, ids in (tail_items or {}).items():
        tail = _unique(np.asarray(ids, dtype=np.int64))
        in_tail = _index_of(tail, t_items) >= 0
        n_tail = np.bincount(t_rows[in_tail], minlength=nu)
        tail_users[label] = int((n_tail > 0).sum())
        tail_targets[label] = int(n_tail.sum())
        tail_hits = np.cumsum(hit & (_index_of(tail, head) >= 0), axis=1, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in ks:
                per[f"tail_recall@{k}[{label}]"] = np.where(n_tail > 0, tail_hits[:, k - 1] / n_tail, np.nan)

    # beyond accuracy: the evaluated users' top beyond_k lists
    bk = f"@{beyond_k}"
    listed = top[:, :beyond_k]
    valid = listed >= 0
    n_items = len(_unique(listed[valid]))
    extra: dict[str, float | None] = {
        f"coverage{bk}": None,
        f"gini{bk}": None,
        f"popularity{bk}": None,
        f"diversity{bk}": None,
    }
    n_catalog = None
    if catalog_ids is not None:
        cat = np.asarray(catalog_ids, dtype=np.int64)
        if len(_unique(cat)) != len(cat):
            raise ValueError("catalog_ids must be unique")
        n_catalog = len(cat)
        pos = np.where(valid, _index_of(cat, listed), 0)
        if (pos[valid] < 0).any():
            bad = listed[valid][pos[valid] < 0]
            raise ValueError(f"topk holds {len(bad)} item id(s) not in catalog_ids, e.g. {int(bad[0])}")
        if nu:
            counts = np.bincount(pos[valid], minlength=n_catalog)
            extra[f"coverage{bk}"] = n_items / n_catalog if n_catalog else None
            extra[f"gini{bk}"] = gini(counts)
        for name, given in (("item_plays", item_plays), ("item_vectors", item_vectors)):
            if given is not None and len(given) != n_catalog:
                raise ValueError(
                    f"{name} has {len(given)} rows for {n_catalog} catalog items (aligned with catalog_ids)"
                )
        with np.errstate(divide="ignore", invalid="ignore"):
            if item_plays is not None:
                pct = play_percentiles(item_plays)
                per[f"popularity{bk}"] = (pct[pos] * valid).sum(axis=1) / valid.sum(axis=1)
                extra[f"popularity{bk}"] = _mean(per[f"popularity{bk}"])
        if item_vectors is not None:
            per[f"diversity{bk}"] = _diversity(pos, valid, item_vectors)
            extra[f"diversity{bk}"] = _mean(per[f"diversity{bk}"])
    elif item_plays is not None or item_vectors is not None:
        raise ValueError("item_plays and item_vectors are aligned with catalog_ids: pass catalog_ids too")

    values: dict[str, float | None] = {
        name: _mean(v) for name, v in per.items() if not name.startswith(("popularity", "diversity"))
    }
    values.update(extra)
    table = None
    if per_user:
        table = pd.DataFrame({"user_id": uids, "n_targets": n_t, **per})
    return CatalogMetrics(
        values=values,
        n_users=nu,
        n_users_input=n_input,
        n_users_no_target=n_input - nu,
        n_targets=int(n_t.sum()),
        tail_users=tail_users,
        tail_targets=tail_targets,
        n_catalog=n_catalog,
        n_items_recommended=n_items,
        beyond_k=beyond_k,
        per_user=table,
    )
