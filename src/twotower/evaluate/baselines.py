"""Baseline scorers that every results table shows next to the model (docs/metrics.md).

- ``random_scores``: seeded uniform random scores.
- ``popularity_scores``: the item's number of plays in the training window; items never played there get 0.
- ``item_prior_scores``: the item's point-in-time positive rate as of the scored day (``item_pos_rate``,
  smoothed toward the global rate exactly as the model's feature is: prepare computes it once for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """``n`` uniform scores in [0, 1) from ``numpy.random.default_rng(seed)`` (float64)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.random.default_rng(seed).random(n)


def item_popularity(train_item_ids: Any) -> pd.Series:
    """Plays per item in the training window: one entry per row of ``train_item_ids`` (int64 Series)."""
    counts = pd.Series(np.asarray(train_item_ids)).value_counts(sort=True)
    counts.index.name = "item_id"
    counts.name = "plays"
    return counts.astype(np.int64)


def _as_series(popularity: Mapping[Any, float] | pd.Series | pd.DataFrame) -> pd.Series:
    if isinstance(popularity, pd.Series):
        return popularity
    if isinstance(popularity, pd.DataFrame):
        if "item_id" not in popularity.columns:
            raise ValueError("popularity table needs an item_id column")
        value_cols = [c for c in ("plays", "popularity", "count") if c in popularity.columns]
        if not value_cols:
            raise ValueError("popularity table needs a plays (or popularity/count) column")
        return popularity.set_index("item_id")[value_cols[0]]
    return pd.Series(dict(popularity), dtype=np.float64)


def popularity_scores(
    item_ids: Any, popularity: Mapping[Any, float] | pd.Series | pd.DataFrame
) -> np.ndarray:
    """The training-window popularity of each item (float64); items absent from ``popularity`` score 0.

    ``popularity``: a mapping item id -> plays, a Series indexed by item id (``item_popularity``), or a
    table with ``item_id`` and ``plays`` columns (``popularity.parquet`` written by ``prepare``).
    """
    table = _as_series(popularity)
    if table.index.has_duplicates:
        raise ValueError("popularity has duplicate item ids")
    items = pd.Index(np.asarray(item_ids))
    pos = table.index.get_indexer(items)
    values = table.to_numpy(dtype=np.float64)
    out = np.zeros(len(items), dtype=np.float64)
    hit = pos >= 0
    out[hit] = values[pos[hit]]
    return out


def item_prior_scores(item_ids: Any, priors: pd.DataFrame) -> np.ndarray:
    """The item prior (float64) of each item: ``priors`` has ``item_id`` and ``item_pos_rate`` as of one day
    (the validation day's rows of ``eval.parquet`` or ``catalog.parquet``). An item without one gets the
    mean prior of the table (the global rate's best stand-in), so that every row is scored."""
    if not {"item_id", "item_pos_rate"} <= set(priors.columns):
        raise ValueError("the item prior needs item_id and item_pos_rate columns (eval.parquet or catalog.parquet)")
    table = priors.drop_duplicates("item_id").set_index("item_id")["item_pos_rate"].astype(np.float64)
    pos = table.index.get_indexer(pd.Index(np.asarray(item_ids)))
    fallback = float(table.mean()) if len(table) else 0.0
    return np.where(pos >= 0, table.to_numpy()[np.clip(pos, 0, None)], fallback)
