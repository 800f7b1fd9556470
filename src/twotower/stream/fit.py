"""The feature space fitted in one streaming pass: the state ``FeatureSpace.fit`` learns from all the rows.

``FitStatistics.update`` takes one part of the training rows at a time and keeps only what is needed:
counts per distinct id (user, item, creator) and, per numeric column, the count, mean and sum of squared
deviations of its non-missing values (after log1p where flagged), merged across parts with Chan et al.'s
pairwise update. ``features`` turns them into a ``FeatureSpace``:

* vocabularies: exactly those of ``fit`` (the same ids and counts);
* numeric scalers (user_base, item_base, creator): ``fit`` takes ``nanmean`` / ``nanstd`` of the whole
  column in one array; here the same quantities come from per-part moments, so they agree to float64
  rounding (relative differences of about 1e-15), not bit for bit;
* user_static: every row of a user carries the same users.parquet values, so the statistics over rows are
  the statistics over users weighted by each user's row count (from the user counts, no per-row pass);
  the log1p choice (non-negative, maximum over 100) looks at the same values; the vocabularies of the
  categorical ``cat_*`` columns count each user's value once per row of the user, as ``fit`` does;
* the content scale: the training rows' items are the item vocabulary, so it is ``fit``'s exactly.

Memory: O(distinct ids + columns), whatever the number of rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.config import ModelConfig
from twotower.model.feature_space import CATEGORY_MIN_COUNT, FeatureSpace, _require, static_log1p
from twotower.model.vocab import CategoryVocab, IdVocab, NumericScaler


class IdCounts:
    """Occurrences of each int64 id over many parts. Parts are counted on arrival and merged when the pending
    ones outgrow the merged table, so memory stays O(distinct ids) and the work O(n log n) overall."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def update(self, values: np.ndarray) -> None:
        ids, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
        self._pending.append((ids, counts.astype(np.int64)))
        self._pending_size += len(ids)
        if self._pending_size > max(len(self.ids), 1 << 16):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self.ids, *(p[0] for p in self._pending)])
        counts = np.concatenate([self.counts, *(p[1] for p in self._pending)])
        self.ids, code = np.unique(ids, return_inverse=True)
        self.counts = np.bincount(code, weights=counts, minlength=len(self.ids)).astype(np.int64)
        self._pending, self._pending_size = [], 0

    def merged(self, other: IdCounts) -> IdCounts:
        """A new IdCounts of both."""
        out = IdCounts()
        self._compact()
        other._compact()
        out._pending = [(self.ids, self.counts), (other.ids, other.counts)]
        out._compact()
        return out

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct ids, their counts)."""
        self._compact()
        return self.ids, self.counts

    def vocab(self, min_count: int = 1) -> IdVocab:
        """The ``IdVocab(min_count).fit`` of every value seen."""
        ids, counts = self.result()
        vocab = IdVocab.from_ids(ids[counts >= min_count])
        vocab.min_count = min_count
        return vocab


class Moments:
    """Per column: the count, mean and sum of squared deviations of the non-NaN values of (n, c) parts."""

    def __init__(self, n_columns: int) -> None:
        self.n = np.zeros(n_columns)
        self.mean = np.zeros(n_columns)
        self.m2 = np.zeros(n_columns)

    def update(self, x: np.ndarray) -> None:
        valid = ~np.isnan(x)
        n = valid.sum(axis=0).astype(np.float64)
        with np.errstate(all="ignore"):
            mean = np.where(n > 0, np.nansum(x, axis=0) / n, 0.0)
            m2 = np.nansum((x - mean) ** 2, axis=0)
        self._combine(n, mean, m2)

    def _combine(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.n + n
        with np.errstate(all="ignore"):
            delta = mean - self.mean
            share = np.where(total > 0, n / total, 0.0)
            self.mean = np.where(self.n > 0, self.mean + delta * share, mean)
            self.m2 = np.where(self.n > 0, self.m2 + m2 + delta**2 * self.n * share, m2)
        self.n = total

    def merged(self, other: Moments) -> Moments:
        out = Moments(len(self.n))
        out._combine(self.n, self.mean, self.m2)
        out._combine(other.n, other.mean, other.m2)
        return out

    def scaler(self, columns: list[str], log1p: list[bool]) -> NumericScaler:
        """The fitted scaler: ``NumericScaler.fit``'s rules (no values: mean 0, std 1; std <= 1e-12: 1)."""
        with np.errstate(all="ignore"):
            std = np.nan_to_num(np.sqrt(self.m2 / self.n))
        return NumericScaler.from_state(columns, log1p, np.where(self.n > 0, self.mean, 0.0), np.where(std > 1e-12, std, 1.0))


def _weighted_moments(x: np.ndarray, weight: np.ndarray) -> Moments:
    """Moments of (n, c) values where row i stands for ``weight[i]`` identical rows."""
    out = Moments(x.shape[1])
    valid = ~np.isnan(x)
    n = valid.T.astype(np.float64) @ weight
    with np.errstate(all="ignore"):
        mean = np.where(n > 0, np.where(valid, x, 0.0).T @ weight / n, 0.0)
        m2 = np.where(valid, (x - mean) ** 2, 0.0).T @ weight
    out._combine(n, mean, m2)
    return out


class FitStatistics:
    """What ``FeatureSpace.fit`` learns from training rows, accumulated one part of the rows at a time."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.groups = FeatureSpace(config).numeric_groups()  # unfitted scalers: the columns and log1p flags
        self.users, self.items, self.creators = IdCounts(), IdCounts(), IdCounts()
        self.moments = {g: Moments(len(s.columns)) for g, s in self.groups.items()}
        self.rows = 0

    def update(self, rows: pd.DataFrame) -> None:
        """Add training rows (train.parquet layout)."""
        _require(rows, ("user_id", "item_id"), "training rows")
        self.rows += len(rows)
        self.users.update(rows["user_id"].to_numpy())
        self.items.update(rows["item_id"].to_numpy())
        if "creator_id" in rows:
            creators = rows["creator_id"].fillna(-1).to_numpy()
            self.creators.update(creators[creators >= 0])
        for group, scaler in self.groups.items():
            _require(rows, scaler.columns, f"feature group '{group}'")
            self.moments[group].update(scaler.inputs(rows))

    def merged(self, other: FitStatistics) -> FitStatistics:
        """The statistics of both sets of rows."""
        out = FitStatistics(self.config)
        out.users, out.items = self.users.merged(other.users), self.items.merged(other.items)
        out.creators = self.creators.merged(other.creators)
        out.moments = {g: m.merged(other.moments[g]) for g, m in self.moments.items()}
        out.rows = self.rows + other.rows
        return out

    def features(self, users: pd.DataFrame | None = None, item_table: pd.DataFrame | None = None) -> FeatureSpace:
        """The fitted ``FeatureSpace`` (``users`` = users.parquet, ``item_table`` = the content table)."""
        space = FeatureSpace(self.config)
        space.users_, space.items_ = self.users.vocab(), self.items.vocab()
        space.creators_ = self.creators.vocab(self.config.creator_min_count)
        for group, scaler in self.groups.items():
            space.scalers_[group] = self.moments[group].scaler(scaler.columns, scaler.log1p)
        if "user_static" in self.config.user_features:
            space.scalers_["user_static"] = self._static(users)
            space.static_categories_ = self._categories(users)
        if space.needs_content:
            space.fit_content(item_table, space.items_.ids_)
        return space

    def _weighted_users(self, users: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
        """The users table's users that have training rows (one row each) and their row counts (float64)."""
        FeatureSpace.static_columns(users)  # the error for a missing users table
        table = users.drop_duplicates("user_id")
        ids, counts = self.users.result()
        at = pd.Index(ids).get_indexer(table["user_id"].to_numpy(np.int64))
        weight = np.where(at >= 0, np.append(counts, 0)[at], 0).astype(np.float64)  # rows of each user
        return table[weight > 0], weight[weight > 0]

    def _static(self, users: pd.DataFrame | None) -> NumericScaler:
        static = FeatureSpace.static_columns(users)
        table, weight = self._weighted_users(users)
        x = table[static].to_numpy(dtype=np.float64, na_value=np.nan).reshape(len(table), len(static))
        scaler = NumericScaler(static, static_log1p(x))
        return _weighted_moments(scaler.inputs(table), weight).scaler(static, scaler.log1p)

    def _categories(self, users: pd.DataFrame | None) -> CategoryVocab | None:
        categorical = FeatureSpace.categorical_columns(users)
        if not categorical:
            return None
        table, weight = self._weighted_users(users)
        return CategoryVocab(categorical, min_count=CATEGORY_MIN_COUNT).fit(table, weight)
