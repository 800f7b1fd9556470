"""Sanity checks of content vectors: do nearest neighbours share a category more often than chance?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def neighbour_category_share(
    vectors: np.ndarray, labels: np.ndarray, k: int = 10, chunk: int = 2048
) -> tuple[float, float]:
    """Mean share of each item's ``k`` nearest neighbours (cosine, itself excluded) with its label.

    ``vectors`` (n, d), ``labels`` (n,). Returns ``(share, chance)`` where ``chance`` is the share expected
    from random neighbours: the mean over items of (items with the same label - 1) / (n - 1).
    """
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    n = len(x)
    if n <= k:
        raise ValueError(f"need more than k={k} items, got {n}")
    same = 0
    for start in range(0, n, chunk):
        sims = x[start : start + chunk] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        same += int((labels[top] == labels[start : start + chunk, None]).sum())
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    chance = float(((counts[inverse] - 1) / (n - 1)).mean())
    return same / (n * k), chance


def kuairec_caption_items(path: str | Path) -> pd.DataFrame:
    """KuaiRec's ``kuairec_caption_category.csv`` as canonical items plus a ``category`` column.

    ``item_id`` is the row position (a few rows of the public file are malformed and have no numeric
    ``video_id``); ``caption``, ``cover_text`` (``manual_cover_text``, with its placeholder ``UNKNOWN``
    removed) and ``category`` (``first_level_category_id``; -1 when missing or ``UNKNOWN``).
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    cover = raw["manual_cover_text"].where(raw["manual_cover_text"].str.strip() != "UNKNOWN", "")
    category = pd.to_numeric(raw["first_level_category_id"], errors="coerce").fillna(-1).astype(np.int64)
    return pd.DataFrame(
        {
            "item_id": np.arange(len(raw), dtype=np.int64),
            "caption": raw["caption"],
            "cover_text": cover,
            "category": category.where(category >= 0, -1),
        }
    )
