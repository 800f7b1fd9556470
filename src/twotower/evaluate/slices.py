"""Slices of the played re-ranking: where does the model beat its baselines, on how many rows.

Three slicings of the evaluation rows (eval.parquet), each group reported with its row and user counts:

- ``item``: rows whose item was unseen / seen in the filtered training rows (``unseen_item``);
- ``duration``: the video's duration (``item_duration_s``) in buckets <15 s, 15–60 s, 60–180 s, >180 s;
- ``past positives``: users by the number of positive items in their history as of the validation day
  (0, 1–4, 5+; the history window of ``history.parquet``, what the model sees).

Item and duration slices cut each user's list, so within a slice many lists are short or hold one label:
``auc`` is then the mean per-user auc over the users who still have both labels in the slice
(``users``), and ``global_auc`` pools all the slice's rows (``rows``). A user slice keeps whole lists, so
every metric of the sheet applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from twotower.evaluate.metrics import global_auc, ranking_metrics
from twotower.model.feature_space import epoch_days

DURATION_BUCKETS = ((0.0, 15.0, "<15 s"), (15.0, 60.0, "15-60 s"), (60.0, 180.0, "60-180 s"), (180.0, np.inf, ">180 s"))
PAST_POSITIVE_BUCKETS = ((0, 1, "0"), (1, 5, "1-4"), (5, np.inf, "5+"))
SLICE_METRICS = ("auc", "ndcg@10", "map")


def past_positives(rows: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """(n,) the number of positive items in each row's (user, day) history; 0 without a history row."""
    keys = pd.MultiIndex.from_arrays([history["user_id"].to_numpy(np.int64), epoch_days(history["day"])])
    counts = history["pos_items"].map(len).to_numpy(np.int64)
    wanted = pd.MultiIndex.from_arrays([rows["user_id"].to_numpy(np.int64), epoch_days(rows["day"])])
    found = keys.get_indexer(wanted)
    return np.where(found >= 0, counts[np.clip(found, 0, None)], 0)


def slice_groups(rows: pd.DataFrame, history: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(slicing, group, row mask (n,)) for every group of every slicing, in report order."""
    groups = []
    if "unseen_item" in rows:
        unseen = rows["unseen_item"].to_numpy() == 1
        groups += [("item", "unseen in training", unseen), ("item", "seen in training", ~unseen)]
    if "item_duration_s" in rows:
        seconds = rows["item_duration_s"].to_numpy(np.float64)
        groups += [("duration", name, (seconds >= lo) & (seconds < hi)) for lo, hi, name in DURATION_BUCKETS]
    if history is not None and len(rows):
        past = past_positives(rows, history)
        groups += [("past positives", name, (past >= lo) & (past < hi)) for lo, hi, name in PAST_POSITIVE_BUCKETS]
    return groups


def played_slices(
    rows: pd.DataFrame, scores: Mapping[str, np.ndarray], history: pd.DataFrame | None
) -> list[dict]:
    """One record per (slicing, group, scorer): counts and the slice's metrics (None when not available).

    ``rows``: the evaluation rows (n); ``scores``: scorer name -> (n,) scores of those rows.
    """
    out = []
    for slicing, group, mask in slice_groups(rows, history):
        part = rows[mask]
        for scorer, values in scores.items():
            m = ranking_metrics(part["user_id"], part["item_id"], part["label"], np.asarray(values)[mask])
            out.append(
                {
                    "slice": slicing,
                    "group": group,
                    "scorer": scorer,
                    "rows": int(mask.sum()),
                    "users": m.n_users,
                    "rows_of_evaluated_users": m.n_rows,
                    **{name: m.values[name] for name in SLICE_METRICS},
                    "global_auc": global_auc(part["label"].to_numpy().astype(np.int8), np.asarray(values, np.float64)[mask]),
                }
            )
    return out


def slice_table(records_by_experiment: Mapping[object, list[dict]], scorers: tuple[str, ...]) -> str:
    """Markdown: one line per (experiment, slice group): rows, users, and per scorer "auc (global auc)"."""
    header = ["exp", "slice", "group", "rows", "users", *scorers]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for experiment, records in records_by_experiment.items():
        keyed = {(r["slice"], r["group"], r["scorer"]): r for r in records}
        for slicing, group in dict.fromkeys((r["slice"], r["group"]) for r in records):
            first = keyed[(slicing, group, scorers[0])]
            cells = [str(experiment), slicing, group, f"{first['rows']:,}", f"{first['users']:,}"]
            for scorer in scorers:
                r = keyed.get((slicing, group, scorer))
                cells.append("n/a" if r is None else f"{_fmt(r['auc'])} ({_fmt(r['global_auc'])})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
