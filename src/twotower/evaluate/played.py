"""The played re-ranking evaluation (docs/metrics.md): the model and every baseline on the evaluation set."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.evaluate.baselines import popularity_scores, random_scores
from twotower.evaluate.metrics import RankingMetrics, ranking_metrics


def baseline_scores(rows: pd.DataFrame, popularity: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Scores (n,) of every baseline for the n evaluation rows: seeded ``random`` and ``popularity``
    (plays in the cleaned training window, ``popularity.parquet``)."""
    return {
        "random": random_scores(len(rows), seed=seed),
        "popularity": popularity_scores(rows["item_id"], popularity),
    }


def evaluate_played(
    rows: pd.DataFrame, model_scores: np.ndarray, popularity: pd.DataFrame, seed: int
) -> dict[str, RankingMetrics]:
    """The sheet's metrics for the model and the baselines on the evaluation rows (eval.parquet)."""
    scorers = {"model": model_scores, **baseline_scores(rows, popularity, seed)}
    return {
        name: ranking_metrics(rows["user_id"], rows["item_id"], rows["label"], scores)
        for name, scores in scorers.items()
    }
