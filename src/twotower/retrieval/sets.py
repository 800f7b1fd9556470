"""Per-user item sets in CSR form: the seen items a search excludes, the targets the metrics score against.

Row u holds ``items[indptr[u]:indptr[u + 1]]``. Rows line up with the query / user rows of the caller (row u
of the queries, of ``topk``); the item ids are the catalog's int64 ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ItemSets:
    """One item set per row: ``indptr (n_rows + 1,) int64`` and ``items (nnz,) int64``."""

    indptr: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr)
        items = np.asarray(self.items)
        if indptr.ndim != 1 or len(indptr) < 1:
            raise ValueError("item sets: indptr must be one-dimensional with n_rows + 1 entries")
        if items.ndim != 1:
            raise ValueError("item sets: items must be one-dimensional")
        if indptr.dtype.kind not in "iu" or (len(items) and items.dtype.kind not in "iu"):
            raise ValueError(
                f"item sets: indptr and items must be integers, got {indptr.dtype}, {items.dtype}"
            )
        if indptr[0] != 0 or indptr[-1] != len(items) or (np.diff(indptr) < 0).any():
            raise ValueError(
                f"item sets: indptr must start at 0, never decrease and end at len(items) = {len(items)}"
            )
        object.__setattr__(self, "indptr", indptr.astype(np.int64, copy=False))
        object.__setattr__(self, "items", items.astype(np.int64, copy=False))

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> np.ndarray:
        """Items per row, ``(n_rows,) int64`` (duplicates counted as given)."""
        return np.diff(self.indptr)

    def rows(self) -> np.ndarray:
        """The row of every entry of ``items``, ``(nnz,) int64``."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts())

    def slice(self, start: int, stop: int) -> ItemSets:
        """Rows ``start:stop`` as their own ``ItemSets`` (views, no copy of the items)."""
        ptr = self.indptr[start : stop + 1]
        return ItemSets(ptr - ptr[0], self.items[ptr[0] : ptr[-1]])

    def take(self, rows: np.ndarray) -> ItemSets:
        """The given rows (indices or a boolean mask over rows), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != self.n_rows:
                raise ValueError(f"item sets: mask has {len(rows)} entries for {self.n_rows} rows")
            rows = np.flatnonzero(rows)
        counts = self.counts()[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        # entry positions: each selected row's start, then 0..count-1 within it
        offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], counts)
        return ItemSets(indptr, self.items[np.repeat(self.indptr[rows], counts) + offsets])

    @classmethod
    def empty(cls, n_rows: int) -> ItemSets:
        return cls(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_lists(cls, lists: Iterable[Sequence[int] | np.ndarray]) -> ItemSets:
        """From one sequence of item ids per row (tests, small inputs)."""
        arrays = [np.asarray(x, dtype=np.int64).ravel() for x in lists]
        indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=indptr[1:])
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(indptr, items)

    @classmethod
    def from_pairs(cls, rows: Any, items: Any, n_rows: int) -> ItemSets:
        """From (row, item) pairs in any order (e.g. the codes of a seen-items table), ``0 <= row < n_rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if rows.shape != items.shape or rows.ndim != 1:
            raise ValueError("item sets: rows and items must be one-dimensional and of the same length")
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(
                f"item sets: row codes must lie in [0, {n_rows}), got [{rows.min()}, {rows.max()}]"
            )
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return cls(indptr, items[order])

    def to_lists(self) -> list[list[int]]:
        """One list of item ids per row (tests, small inputs)."""
        return [self.items[a:b].tolist() for a, b in zip(self.indptr[:-1], self.indptr[1:], strict=True)]
