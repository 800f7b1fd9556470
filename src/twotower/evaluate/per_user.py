"""``per_user.parquet``: every scorer's per-user values of the played re-ranking, so runs can be paired.

One row per (scorer, user of the evaluation set): ``scorer, user_id, list_hash, n, n_pos, status`` and every
per-user metric of ``evaluate.metrics.ranking_metrics(..., per_user=True)`` (``auc, avg_prec@10, map, mrr,
ndcg@5, ndcg@10, recall@5/10/50/100, recall@all_pos``). Every user of the evaluation set is written, with
``status`` "evaluated" or why the metrics left it out (metric values NaN then); the evaluation set holds
only users with both labels, so in a run all are normally "evaluated". The mean of a metric over the
"evaluated" rows of a scorer is exactly that scorer's value in ``metrics.json``.

``list_hash`` identifies the user's list: a 64-bit hash of its (item_id, label) pairs, independent of their
order. Two runs evaluated a user on the same list when the hashes agree, so a comparison of runs whose
evaluation sets differ (other filters, other label) pairs only users whose lists are identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.evaluate.metrics import RankingMetrics, ranking_metrics
from twotower.evaluate.played import BASELINES, baseline_scores
from twotower.io import write_atomic

FILE = "per_user.parquet"
KEY_COLUMNS = ("scorer", "user_id", "list_hash", "n", "n_pos", "status")


def list_hashes(rows: pd.DataFrame) -> pd.DataFrame:
    """``user_id, list_hash`` for the users of ``rows`` (user_id, item_id, label; N rows): the wrapping
    uint64 sum of one hash per (item_id, label) row, so the order of a user's rows does not matter."""
    row_hash = pd.util.hash_pandas_object(
        pd.DataFrame({"item_id": rows["item_id"].to_numpy(), "label": rows["label"].to_numpy().astype(np.int8)}),
        index=False,
    ).to_numpy()
    codes, users = pd.factorize(rows["user_id"], sort=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(users)))
    sums = np.add.reduceat(row_hash[order], starts, dtype=np.uint64) if len(order) else np.zeros(0, np.uint64)
    return pd.DataFrame({"user_id": np.asarray(users), "list_hash": sums})


def per_user_frame(tables: Mapping[str, pd.DataFrame], rows: pd.DataFrame) -> pd.DataFrame:
    """One frame from per-scorer tables (``RankingMetrics.per_user``), with the users' ``list_hash``."""
    hashes = list_hashes(rows)
    frames = []
    for scorer, table in tables.items():
        frame = table.merge(hashes, on="user_id", how="left", validate="one_to_one")
        frames.append(frame.assign(scorer=scorer))
    out = pd.concat(frames, ignore_index=True)
    metrics = [c for c in out.columns if c not in KEY_COLUMNS]
    return out[[*KEY_COLUMNS, *metrics]]


def played_per_user(
    rows: pd.DataFrame,
    model_scores: np.ndarray,
    popularity: pd.DataFrame,
    seed: int,
    metrics: Mapping[str, RankingMetrics] | None = None,
) -> pd.DataFrame:
    """The per-user frame of every scorer on the evaluation rows (eval.parquet, N rows).

    ``metrics`` (``evaluate_played(...).metrics``): its scorers, each with the per-user table it carries
    (``ranking_metrics(per_user=True)``); a table it lacks, or every table without ``metrics``, is computed
    here from the scores ``evaluate_played`` uses (the model's and ``baseline_scores`` with the run's seed),
    so the values match ``metrics.json`` either way.
    """
    given = {name: m.per_user for name, m in (metrics or {}).items() if m.per_user is not None}
    names = list(metrics) if metrics is not None else ["model", *BASELINES]
    if any(name not in given for name in names):
        scorers = {"model": np.asarray(model_scores), **baseline_scores(rows, popularity, seed)}
        for name in names:
            if name not in given:
                given[name] = ranking_metrics(rows["user_id"], rows["item_id"], rows["label"], scorers[name], per_user=True).per_user
    return per_user_frame({name: given[name] for name in names}, rows)


def write_per_user(path: Path, frame: pd.DataFrame) -> Path:
    """Write the per-user frame as Parquet, atomically."""
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
