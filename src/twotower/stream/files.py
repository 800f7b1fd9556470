"""Prepared Parquet read a row group at a time: the training examples and the history snapshots.

A path is one Parquet file or a directory of them (Hive partitions such as ``day=2022-05-01/`` included:
the partition value becomes the ``day`` column); ``pyarrow.dataset`` lists the row groups. Nothing here
holds more than one row group of examples, or the history rows one row group needs.

``ExampleFiles.scan`` reads four key columns once and returns an ``ExampleIndex``: for every row group, its
rows and positive rows on each day, and the hash of the rows' keys that the training state's fingerprint
uses (``twotower.train``), so that the streamed path plans its epochs, counts its batches and checks a
training state without holding the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from twotower.model.feature_space import epoch_days

KEYS = ("user_id", "item_id", "label", "day")


def _dataset(path: Path, what: str) -> ds.Dataset:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {what} (a Parquet file or a directory of them)")
    return ds.dataset(path, format="parquet", partitioning="hive")


def keys_hash(frame: pd.DataFrame) -> int:
    """Sum (mod 2**64) of the row hashes of (user_id, item_id, label, day as days since 1970-01-01): the same
    value for any split of the rows into parts, so a streamed scan reproduces the in-memory fingerprint."""
    keys = frame[["user_id", "item_id", "label"]].assign(day=epoch_days(frame["day"]))
    return int(pd.util.hash_pandas_object(keys, index=False).to_numpy(np.uint64).sum(dtype=np.uint64))


@dataclass(frozen=True)
class ExampleIndex:
    """What one scan learned: ``days`` (D,) the sorted distinct days (days since 1970-01-01); ``rows`` and
    ``positives`` (G, D) int64, row group g's rows (label 1 rows) on day d; ``rows_hash`` (``keys_hash``)."""

    days: np.ndarray
    rows: np.ndarray
    positives: np.ndarray
    rows_hash: int

    @property
    def n_rows(self) -> int:
        return int(self.rows.sum())

    def columns(self, days: Iterable[int] | None) -> np.ndarray:
        """Column positions of ``days`` (None: every day) -> (k,)."""
        if days is None:
            return np.arange(len(self.days))
        return np.flatnonzero(np.isin(self.days, np.fromiter(days, np.int64)))

    def counts(self, days: Iterable[int] | None = None, positives: bool = False) -> np.ndarray:
        """(G, k): rows (or positive rows) of each row group on each of ``days`` (None: every day)."""
        return (self.positives if positives else self.rows)[:, self.columns(days)]


class ExampleFiles:
    """train.parquet (or a directory of its parts) and history.parquet, read a row group at a time."""

    def __init__(self, train: str | Path, history: str | Path | None = None):
        self.train_path = Path(train)
        self.history_path = Path(history) if history is not None else None
        self._data = _dataset(self.train_path, "training examples")
        self.schema = self._data.schema
        self.groups = [g for f in self._data.get_fragments() for g in f.split_by_row_group()]
        self._history = _HistoryFiles(self.history_path) if self.history_path is not None else None

    @classmethod
    def prepared(cls, directory: str | Path) -> ExampleFiles:
        """The training files of a prepared directory (train.parquet, history.parquet)."""
        directory = Path(directory)
        history = directory / "history.parquet"
        return cls(directory / "train.parquet", history if history.exists() else None)

    def __len__(self) -> int:
        return len(self.groups)

    def read(
        self, group: int, columns: Iterable[str] | None = None, days: Iterable[int] | None = None,
        positives: bool = False,
    ) -> pd.DataFrame:  # fmt: skip
        """Row group ``group`` as a DataFrame: ``columns`` (those the files have; None: all), only the rows on
        ``days`` (days since 1970-01-01; None: all) and, with ``positives``, only label 1 rows; file order."""
        names = None if columns is None else [c for c in dict.fromkeys(columns) if c in self.schema.names]
        frame = self.groups[group].to_table(schema=self.schema, columns=names).to_pandas()
        keep = np.ones(len(frame), bool)
        if days is not None:
            keep &= np.isin(epoch_days(frame["day"]), np.fromiter(days, np.int64))
        if positives:
            keep &= frame["label"].to_numpy() == 1
        return frame if keep.all() else frame[keep].reset_index(drop=True)

    def scan(self) -> ExampleIndex:
        """One pass over the key columns -> the ``ExampleIndex``."""
        per_group, total = [], 0
        for g in range(len(self.groups)):
            frame = self.read(g, KEYS)
            total = (total + keys_hash(frame)) % 2**64  # as the in-memory uint64 sum wraps
            days, code = np.unique(epoch_days(frame["day"]), return_inverse=True)
            positive = (frame["label"].to_numpy() == 1).astype(np.int64)
            per_group.append((days, np.bincount(code, minlength=len(days)), np.bincount(code, positive, len(days))))
        days = np.unique(np.concatenate([p[0] for p in per_group])) if per_group else np.zeros(0, np.int64)
        rows = np.zeros((len(self.groups), len(days)), np.int64)
        positives = np.zeros_like(rows)
        for g, (group_days, n, pos) in enumerate(per_group):
            at = np.searchsorted(days, group_days)
            rows[g, at], positives[g, at] = n, pos.astype(np.int64)
        return ExampleIndex(days.astype(np.int64), rows, positives, total)

    def read_days(self, index: ExampleIndex, days: Iterable[int], columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Every row on ``days``, in file order (for the held-out day: one day of rows in memory)."""
        days = list(days)
        groups = np.flatnonzero(index.counts(days).sum(axis=1) > 0)
        frames = [self.read(int(g), columns, days) for g in groups]
        return pd.concat(frames, ignore_index=True) if frames else self.read(0, columns, days).iloc[:0]

    def history_for(self, rows: pd.DataFrame) -> pd.DataFrame | None:
        """The history rows of ``rows``' (user_id, day) keys (possibly a few more), or None without history."""
        return self._history.lookup(rows) if self._history is not None else None

    def frames(self, groups: Iterable[int], columns: Iterable[str] | None = None) -> Iterator[pd.DataFrame]:
        """Row groups ``groups`` one after the other."""
        for g in groups:
            yield self.read(int(g), columns)


class _HistoryFiles:
    """history.parquet looked up per row group of examples: a filter on the rows' days and, per day, their
    user id range, which Parquet statistics prune to the few row groups that can hold those keys
    (prepare writes history sorted by day and user)."""

    def __init__(self, path: Path):
        self.data = _dataset(path, "history snapshots")
        self.day_type = self.data.schema.field("day").type

    def lookup(self, rows: pd.DataFrame) -> pd.DataFrame:
        users, days = rows["user_id"].to_numpy(np.int64), epoch_days(rows["day"])
        clause = None
        for day in np.unique(days):
            on_day = users[days == day]
            value = pa.array([int(day)], pa.int32()).cast(pa.date32()).cast(self.day_type)[0]
            part = (ds.field("day") == value) & (ds.field("user_id") >= int(on_day.min())) & (
                ds.field("user_id") <= int(on_day.max())
            )
            clause = part if clause is None else clause | part
        if clause is None:
            return self.data.head(0).to_pandas()
        return self.data.to_table(filter=clause).to_pandas()
