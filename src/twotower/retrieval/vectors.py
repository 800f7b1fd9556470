"""Checked inputs of the item index and the vector arithmetic it needs: finite float32 matrices, unique
non-negative item ids, id lookups by binary search, and the inner-product-to-L2 reduction for HNSW."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np


def as_matrix(values: Any, name: str, d: int | None = None) -> np.ndarray:
    """``values`` as a C-contiguous finite float32 ``(rows, d)`` matrix; ``ValueError`` otherwise."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a two-dimensional (rows, d) array, got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} have {x.shape[1]} columns, the index has d = {d}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite: {int((~np.isfinite(x)).sum())} NaN or infinite value(s)")
    return x


def check_item_ids(item_ids: Any, n: int) -> np.ndarray:
    """``item_ids`` as ``n`` unique non-negative int64 ids; ``ValueError`` otherwise."""
    ids = np.asarray(item_ids)
    if ids.ndim != 1 or len(ids) != n or (n and ids.dtype.kind not in "iu"):
        raise ValueError(
            f"item_ids must be {n} integers (one per vector), got shape {ids.shape}, {ids.dtype}"
        )
    ids = ids.astype(np.int64, copy=False)
    if n and ids.min() < 0:
        raise ValueError("item_ids must be non-negative (-1 pads short result lists)")
    srt = np.sort(ids)  # (np.unique is hash-based and slow on 1M int64 ids in numpy 2.4)
    if (srt[1:] == srt[:-1]).any():
        raise ValueError(f"item_ids must be unique: {int(srt[1:][srt[1:] == srt[:-1]][0])} repeats")
    return ids


def positions(sorted_ids: np.ndarray, sorter: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index positions of ``ids`` and whether each is in the index at all."""
    at = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
    found = sorted_ids[at] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    return sorter[at], found


def to_l2(x: np.ndarray) -> np.ndarray:
    """Item vectors (n, d) -> (n, d + 1) with the extra coordinate sqrt(max ||x||^2 - ||x||^2): then
    ||q' - x'||^2 = ||q||^2 + max ||x||^2 - 2 q.x for a query q' = (q, 0), smallest where q.x is largest."""
    norms = np.einsum("nd,nd->n", x.astype(np.float64), x.astype(np.float64))
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
    return np.ascontiguousarray(np.hstack([x, extra[:, None].astype(np.float32)]))


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """The (n, d + 1) float32 vectors an ``IndexHNSWFlat`` stores, as a view (no copy)."""
    storage = faiss.downcast_index(index.storage)
    n, d = int(storage.ntotal), int(storage.d)
    if n == 0:
        return np.zeros((0, d), np.float32)
    return faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
