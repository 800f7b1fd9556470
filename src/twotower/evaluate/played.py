"""The played re-ranking evaluation (docs/metrics.md): the model and every baseline on the evaluation set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from twotower.evaluate.baselines import item_prior_scores, popularity_scores, random_scores
from twotower.evaluate.metrics import RankingMetrics, ranking_metrics
from twotower.evaluate.slices import played_slices

BASELINES = ("random", "popularity", "item_prior")


def baseline_scores(rows: pd.DataFrame, popularity: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Scores (n,) of every baseline for the n evaluation rows (eval.parquet): seeded ``random``,
    ``popularity`` (plays in the cleaned training window, ``popularity.parquet``) and ``item_prior`` (the
    item's point-in-time positive rate, the rows' own ``item_pos_rate`` column)."""
    return {
        "random": random_scores(len(rows), seed=seed),
        "popularity": popularity_scores(rows["item_id"], popularity),
        "item_prior": item_prior_scores(rows["item_id"], rows[["item_id", "item_pos_rate"]]),
    }


@dataclass
class PlayedEvaluation:
    """The played re-ranking of one experiment: per scorer the sheet's metrics (with the per-user table),
    and the slices (``evaluate/slices.py``)."""

    metrics: dict[str, RankingMetrics]
    slices: list[dict]


def evaluate_played(
    rows: pd.DataFrame,
    model_scores: np.ndarray,
    popularity: pd.DataFrame,
    seed: int,
    history: pd.DataFrame | None = None,
) -> PlayedEvaluation:
    """The sheet's metrics for the model and the baselines on the n evaluation rows (eval.parquet), and
    their slices (the past-positives slice needs ``history``)."""
    scorers = {"model": model_scores, **baseline_scores(rows, popularity, seed)}
    metrics = {
        name: ranking_metrics(rows["user_id"], rows["item_id"], rows["label"], scores, per_user=True)
        for name, scores in scorers.items()
    }
    return PlayedEvaluation(metrics, played_slices(rows, scorers, history))
