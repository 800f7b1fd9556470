"""Reading what ``prepare`` wrote for one experiment (the file layout is in ``schema.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

MARKER = "prepare.json"  # written last by prepare: {"state": "completed", ...}


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
            *(pd.read_parquet(directory / f"{name}.parquet") for name in ("train", "eval", "history", "items")),
            pd.read_parquet(users) if users.exists() else None,
            pd.read_parquet(directory / "popularity.parquet"),
            json.loads((directory / "funnel.json").read_text()),
            directory,
        )

    def read_extra(self, name: str) -> pd.DataFrame:
        """Another table of the directory (catalog, retrieval_users, retrieval_targets, seen)."""
        return pd.read_parquet(self.directory / f"{name}.parquet")


def is_complete(directory: Path) -> bool:
    """Whether ``prepare`` finished writing ``directory`` (its marker prepare.json says completed)."""
    try:
        return json.loads((Path(directory) / MARKER).read_text()).get("state") == "completed"
    except (OSError, ValueError):
        return False
