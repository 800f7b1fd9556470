"""Reading what ``prepare`` wrote for one experiment (the file layout is in ``schema.py``).

A table ``<name>.parquet`` is one Parquet file, or (``data.partition_by_day``) a directory of Hive
folders ``day=YYYY-MM-DD/`` holding Parquet parts; :func:`read_table` reads both into the same frame: the
same columns in the same order, ``day`` a timestamp at midnight, rows in the order they were written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from twotower.data.storage import Location, locate

MARKER = "prepare.json"  # written last by prepare: {"state": "completed", ...}
DAY_TYPE = pa.timestamp("us")  # how a single-file table stores `day` (midnight, no zone)


def read_arrow(path: str | Path | Location, day: dt.date | None = None) -> pa.Table:
    """One prepared table (a file, or a directory partitioned by day) as an Arrow table; ``path`` is a
    local path or a URI; ``day``: only that day's rows (of a table with a day)."""
    location = locate(path)
    if not location.is_dir():
        at = pa.scalar(dt.datetime.combine(day, dt.time()), DAY_TYPE) if day is not None else None
        with location.open_file() as handle:
            return pq.read_table(handle, filters=None if at is None else ds.field("day") == at)
    by_day = any(entry.name.startswith("day=") for entry in location.entries())
    if not by_day:  # a directory of parts (Spark's output of a table without a day)
        return ds.dataset(location.path, filesystem=location.fs, format="parquet").to_table()
    partitioning = ds.partitioning(pa.schema([("day", pa.date32())]), flavor="hive")
    dataset = ds.dataset(location.path, filesystem=location.fs, format="parquet", partitioning=partitioning)
    table = dataset.to_table(filter=None if day is None else ds.field("day") == pa.scalar(day, pa.date32()))
    if "day" in table.column_names:
        day = table.column("day").cast(DAY_TYPE)
        table = table.drop(["day"]).append_column(pa.field("day", DAY_TYPE), day)
    return table


def read_table(path: str | Path | Location, day: dt.date | None = None) -> pd.DataFrame:
    """One prepared table as a DataFrame, whatever its layout (see the module docstring); ``day``: only
    that day's rows."""
    return read_arrow(path, day).to_pandas()


@dataclass(frozen=True)
class PreparedTables:
    """The Parquet files of one prepared experiment directory, read into memory."""

    train: pd.DataFrame
    eval: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    popularity: pd.DataFrame
    funnel: dict  # funnel.json
    directory: Path

    @classmethod
    def read(cls, directory: Path) -> PreparedTables:
        """Read a complete prepared directory (``ValueError`` naming it when ``prepare`` did not finish)."""
        directory = Path(directory)
        if not is_complete(directory):
            raise ValueError(f"{directory} holds no complete prepared data; run `twotower prepare` (again) first")
        users = directory / "users.parquet"
        return cls(
            *(read_table(directory / f"{name}.parquet") for name in ("train", "eval", "history", "items")),
            read_table(users) if users.exists() else None,
            read_table(directory / "popularity.parquet"),
            json.loads((directory / "funnel.json").read_text()),
            directory,
        )

    def read_extra(self, name: str) -> pd.DataFrame:
        """Another table of the directory (catalog, retrieval_users, retrieval_targets, seen)."""
        return read_table(self.directory / f"{name}.parquet")


def is_complete(directory: str | Path) -> bool:
    """Whether ``prepare`` finished writing ``directory`` (its marker prepare.json says completed); a
    local path or a URI."""
    try:
        return json.loads((locate(directory) / MARKER).read_text()).get("state") == "completed"
    except (OSError, ValueError):
        return False
