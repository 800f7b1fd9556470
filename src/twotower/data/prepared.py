"""Reading what ``prepare`` wrote for one experiment (the file layout is in ``schema.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class PreparedTables:
    """The Parquet files of one prepared experiment directory, read into memory."""

    train: pd.DataFrame
    eval: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    popularity: pd.DataFrame

    @classmethod
    def read(cls, directory: Path) -> PreparedTables:
        users = directory / "users.parquet"
        return cls(
            *(pd.read_parquet(directory / f"{name}.parquet") for name in ("train", "eval", "history", "items")),
            pd.read_parquet(users) if users.exists() else None,
            pd.read_parquet(directory / "popularity.parquet"),
        )
