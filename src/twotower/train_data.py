"""The training rows as ``twotower.train`` sees them: in memory (a DataFrame) or left in the prepared Parquet.

Both answer the same questions: the fingerprint of the rows (for resuming), the held-out last training day
(its metric's name and the metric itself), and the rows of each pass (selection: every day but the held-out
one; refit: every day). ``InMemoryExamples`` answers from the DataFrame. ``StreamedExamples`` (``[train] shuffle_buffer``
> 0) answers from one scan of the key columns (``ExampleFiles.scan``) and one streaming pass that fits both
passes' feature spaces (``twotower.stream.fit``); rank 0 alone scores the held-out day: a row group at a
time for ``bce`` (``twotower.stream.holdout``), the day's rows in memory for ``softmax``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from twotower.config import ModelConfig
from twotower.data.prepared import PreparedTables, is_complete
from twotower.distributed import Distributed
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.selection import CatalogHoldout, holdout_name, make_holdout
from twotower.stream.files import ExampleFiles, keys_hash
from twotower.stream.fit import FitStatistics
from twotower.stream.holdout import StreamedPlayedHoldout
from twotower.train_pass import StreamedRows


def read_for_training(directory: Path) -> PreparedTables:
    """A complete prepared directory as ``PreparedTables`` without its two tables that grow with the log:
    train.parquet and history.parquet stay on disk for streamed training (``ExampleFiles``), and zero-row
    frames with their columns stand in for them."""
    if not is_complete(directory):
        raise ValueError(f"{directory} holds no complete prepared data; run `twotower prepare` (again) first")
    empty = [ds.dataset(directory / f"{n}.parquet", partitioning="hive").head(0).to_pandas() for n in ("train", "history")]
    users = directory / "users.parquet"
    return PreparedTables(
        empty[0], pd.read_parquet(directory / "eval.parquet"), empty[1], pd.read_parquet(directory / "items.parquet"),
        pd.read_parquet(users) if users.exists() else None, pd.read_parquet(directory / "popularity.parquet"),
        json.loads((directory / "funnel.json").read_text()), directory,
    )  # fmt: skip


class InMemoryExamples:
    """Training rows (train.parquet layout) held in a DataFrame, with history.parquet."""

    def __init__(self, rows: pd.DataFrame, history: pd.DataFrame | None, objective: str):
        self.rows, self.history = rows.reset_index(drop=True), history
        days = epoch_days(self.rows["day"])
        self.last_day = int(days.max())
        self.hold = days == self.last_day
        self.name = holdout_name(objective, self.rows[self.hold]) if not self.hold.all() else "none"
        if self.name == "none":  # one training day, or nothing to score on the last one: every day trains
            self.hold[:] = False
        self.n_holdout = int(self.hold.sum())

    def fingerprint(self) -> dict:
        return {"rows": len(self.rows), "rows_hash": keys_hash(self.rows)}

    def holdout(self, features: FeatureSpace, users: pd.DataFrame | None, catalog: pd.DataFrame | None):
        """The held-out day's metric (``selection.make_holdout``) for the selection pass's ``features``."""
        return make_holdout(self.name, features, self.rows[self.hold], self.history, users, catalog)

    def pass_rows(self, selection: bool) -> pd.DataFrame:
        return self.rows[~self.hold] if selection else self.rows


class StreamedExamples:
    """Training rows left in prepared Parquet (``ExampleFiles``); ``dist``: rank 0 scans and fits, and
    every rank receives the results."""

    def __init__(
        self, files: ExampleFiles, model_config: ModelConfig, objective: str, users: pd.DataFrame | None,
        item_table: pd.DataFrame | None, dist: Distributed | None = None,
    ):  # fmt: skip
        self.files, self.config, self.objective = files, model_config, objective
        self.users, self.item_table, self.dist = users, item_table, dist
        main = dist is None or dist.is_main
        index = files.scan() if main else None
        self.index = dist.share(index) if dist else index
        if not len(self.index.days):
            raise ValueError(f"{files.train_path} holds no training rows")
        self.last_day = int(self.index.days.max())
        name = "none"
        if len(self.index.days) > 1 and main:  # the held-out day's users and labels decide its metric
            name = holdout_name(objective, files.read_days(self.index, [self.last_day], ["user_id", "label", "day"]))
        self.name = dist.share(name) if dist else name
        self.n_holdout = int(self.index.counts([self.last_day]).sum()) if self.name != "none" else 0
        self._fitted: tuple | None = None

    def fingerprint(self) -> dict:
        return {"rows": self.index.n_rows, "rows_hash": self.index.rows_hash}

    def holdout(self, features: FeatureSpace, users: pd.DataFrame | None, catalog: pd.DataFrame | None):
        """The held-out day's metric (rank 0 calls it): played rows scored a row group at a time (bce), or the
        catalog recall@100 of the day's rows read into memory (softmax: its users' first plays and positives)."""
        if self.name == CatalogHoldout.name:
            rows = self.files.read_days(self.index, [self.last_day])
            return make_holdout(self.name, features, rows, self.files.history_for(rows), users, catalog)
        return StreamedPlayedHoldout(self.name, self.files, self.index, self.last_day, features, users)

    def pass_rows(self, selection: bool) -> StreamedRows:
        days = [int(d) for d in self.index.days]
        if selection and self.name != "none":
            days = [d for d in days if d != self.last_day]
        select, refit, shares = self._fit()
        features = select if selection or self.name == "none" else refit
        return StreamedRows(self.files, self.index, days, features, shares)

    def _fit(self) -> tuple[FeatureSpace, FeatureSpace, pd.Series | None]:
        """One pass over the row groups (rank 0): the selection and refit feature spaces and p_day."""
        if self._fitted is None:
            main = self.dist is None or self.dist.is_main
            fitted = self._fit_pass() if main else None
            self._fitted = self.dist.share(fitted) if self.dist else fitted
        return self._fitted

    def _fit_pass(self) -> tuple[FeatureSpace, FeatureSpace, pd.Series | None]:
        before, last = FitStatistics(self.config), FitStatistics(self.config)
        columns = ["user_id", "item_id", "creator_id", "day", "label"]
        columns += [c for s in before.groups.values() for c in s.columns]
        positives = _PairCounts()
        held = self.name != "none"
        for g in range(len(self.files)):
            frame = self.files.read(g, columns)
            days = epoch_days(frame["day"])
            on_last = days == self.last_day if held else np.zeros(len(frame), bool)
            before.update(frame[~on_last] if on_last.any() else frame)
            if on_last.any():
                last.update(frame[on_last])
            if self.objective == "softmax":
                positive = frame["label"].to_numpy() == 1
                positives.update(days[positive], frame["item_id"].to_numpy(np.int64)[positive])
        select = before.features(self.users, self.item_table)
        refit = before.merged(last).features(self.users, self.item_table) if held else select
        return select, refit, positives.shares() if self.objective == "softmax" else None


class _PairCounts:
    """Positive rows per (day, item), accumulated per part and merged when the parts outgrow the total:
    memory O(distinct pairs). ``shares`` is ``positive_shares`` of all the rows."""

    def __init__(self) -> None:
        self.total: pd.Series | None = None
        self.parts: list[pd.Series] = []
        self.pending = 0

    def update(self, days: np.ndarray, items: np.ndarray) -> None:
        part = pd.DataFrame({"day": days, "item_id": items}).groupby(["day", "item_id"]).size()
        self.parts.append(part)
        self.pending += len(part)
        if self.pending > max(len(self.total) if self.total is not None else 0, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        parts = ([self.total] if self.total is not None else []) + self.parts
        if parts:
            self.total = pd.concat(parts).groupby(level=["day", "item_id"]).sum()
        self.parts, self.pending = [], 0

    def shares(self) -> pd.Series:
        self._merge()
        counts = self.total if self.total is not None else pd.Series(dtype=np.int64)
        return counts / counts.groupby(level="day").transform("sum")
