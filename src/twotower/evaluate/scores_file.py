"""Any model's scores file for the played re-ranking metrics (``twotower metrics``).

The file (Parquet, or CSV) holds one row per (user, item) of the played re-ranking set with columns
``user_id``, ``item_id``, ``label`` (0/1) and ``score`` (finite), one row per (user, item). Other columns are
ignored. ``read_scores``
validates it; ``scores_metrics`` computes the sheet's metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twotower.evaluate.metrics import RankingMetrics, ranking_metrics

REQUIRED_COLUMNS = ("user_id", "item_id", "label", "score")


def read_scores(path: Path) -> pd.DataFrame:
    """Read and validate a scores file; ``ValueError`` naming the file and column on any problem."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    parquet = suffix in (".parquet", ".pq") or path.is_dir()
    if not parquet and suffix not in (".csv", ".gz", ".txt", ".tsv"):
        raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .parquet or .csv)")
    try:
        if parquet:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names if path.is_file() else None
            columns = [c for c in REQUIRED_COLUMNS if names is None or c in names]
            frame = pd.read_parquet(path, columns=columns)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as exc:  # unreadable or corrupt file (pyarrow's errors include ValueErrors)
        raise ValueError(f"{path}: cannot read scores ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"expected {', '.join(REQUIRED_COLUMNS)} (found {', '.join(map(str, frame.columns)) or 'none'})"
        )
    frame = frame[list(REQUIRED_COLUMNS)]
    for column in ("user_id", "item_id"):
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise ValueError(f"{path}: column {column!r} has {nulls} missing value(s)")
    _check_labels(path, frame["label"])
    _check_scores(path, frame["score"])
    _check_unique(path, frame)
    return frame


def _check_unique(path: Path, frame: pd.DataFrame) -> None:
    """One row per (user, item), as in the evaluation set: a repeated pair would count twice in recall and
    avg_prec, so it is an error that names the pairs (aggregate them first, e.g. label = any positive)."""
    repeated = frame.duplicated(["user_id", "item_id"], keep=False)
    if repeated.any():
        pairs = frame.loc[repeated, ["user_id", "item_id"]].drop_duplicates()
        shown = ", ".join(f"({u}, {i})" for u, i in pairs.head(5).itertuples(index=False))
        raise ValueError(
            f"{path}: {len(pairs):,} (user_id, item_id) pair(s) appear on more than one row, e.g. {shown}; "
            "the metrics need one row per user and item (aggregate them, e.g. label = 1 if any play was positive)"
        )


def _first_bad(series: pd.Series, bad: np.ndarray) -> str:
    first = int(np.flatnonzero(bad)[0])
    return f"{int(bad.sum())} row(s), first {series.iloc[first]!r} at row {first}"


def _check_labels(path: Path, labels: pd.Series) -> None:
    if labels.dtype == bool:
        return
    numeric = pd.to_numeric(labels, errors="coerce")
    bad = (numeric.isna() | ~numeric.isin([0, 1])).to_numpy()
    if bad.any():
        raise ValueError(f"{path}: column 'label' must be binary (0 or 1): {_first_bad(labels, bad)}")


def _check_scores(path: Path, scores: pd.Series) -> None:
    numeric = pd.to_numeric(scores, errors="coerce").astype(np.float64)
    bad = ~np.isfinite(numeric.to_numpy())
    if bad.any():
        raise ValueError(f"{path}: column 'score' must be finite numbers: {_first_bad(scores, bad)}")


def scores_metrics(frame: pd.DataFrame) -> RankingMetrics:
    return ranking_metrics(
        frame["user_id"].to_numpy(),
        frame["item_id"].to_numpy(),
        frame["label"].to_numpy().astype(np.int8),
        pd.to_numeric(frame["score"]).to_numpy(dtype=np.float64),
    )
