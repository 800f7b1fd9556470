"""History probe: does the positive-history mean recover a user's planted preference?

For every evaluated user of a planted-log run, take the history snapshot the model sees on the validation day
(``history.parquet`` of the prepared directory), average the content vectors of the positive-history items,
and ask which topic centre that mean is closest to (cosine). The share of users whose nearest centre is
their true preferred topic, against chance ``1 / topics``, shows whether the history path can carry the
signal at all, independently of what the model then learns. The same on the negative history is a contrast:
negatives are plays the user left early, so their mean should point less often to the preferred topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.synth import read_truth, read_vectors


@dataclass(frozen=True)
class ProbeResult:
    """``accuracy``: share of ``users`` (with >= 1 history item that has a vector) whose mean history vector
    is nearest to their true topic centre; ``chance`` = 1 / topics; ``users_without_history`` left out."""

    users: int
    users_without_history: int
    accuracy: float | None
    chance: float
    negative_users: int
    negative_accuracy: float | None

    def as_dict(self) -> dict:
        return {
            "users": self.users,
            "users_without_history": self.users_without_history,
            "accuracy": self.accuracy,
            "chance": self.chance,
            "negative_users": self.negative_users,
            "negative_accuracy": self.negative_accuracy,
        }


def nearest_centre(
    lists: pd.Series, item_ids: np.ndarray, vectors: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """For each list of item ids (n,), the index of the centre (k, d) nearest (cosine) to the mean of the
    items' vectors (m, d); -1 where no item of the list has a vector. Vectorised over all lists."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = (
        np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        if lengths.sum()
        else np.zeros(0, np.int64)
    )
    rows = pd.Index(item_ids).get_indexer(flat)
    known = rows >= 0
    owner = np.repeat(np.arange(len(lists)), lengths)[known]
    sums = np.zeros((len(lists), vectors.shape[1]))
    np.add.at(sums, owner, vectors[rows[known]].astype(np.float64))
    counts = np.bincount(owner, minlength=len(lists))
    # The mean's direction is the sum's direction: cosine needs no division by the count.
    unit_centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    nearest = (sums @ unit_centres.T).argmax(axis=1)
    return np.where(counts > 0, nearest, -1)


def history_probe(
    history: pd.DataFrame,
    users: np.ndarray,
    day,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    centres: np.ndarray,
    user_topic: pd.Series,
) -> ProbeResult:
    """Probe ``users`` on ``day``'s snapshots of ``history`` (history.parquet layout: user_id, day, pos_items,
    neg_items). ``vectors`` (m, d) of ``item_ids`` (m,) and ``centres`` (topics, d) share one space;
    ``user_topic``: true topic indexed by user id."""
    users = np.unique(np.asarray(users, dtype=np.int64))
    snap = history[pd.to_datetime(history["day"]) == pd.Timestamp(day)]
    snap = snap.drop_duplicates("user_id").set_index("user_id").reindex(users)
    truth = user_topic.reindex(users).to_numpy()
    if np.isnan(truth.astype(np.float64)).any():
        raise ValueError(
            f"{int(pd.isna(truth).sum())} evaluated user(s) have no true topic; is this the right planted log?"
        )
    results = {}
    for kind in ("pos_items", "neg_items"):
        # users without a snapshot on that day (reindex gave NaN) have an empty list
        lists = pd.Series([x if isinstance(x, list | np.ndarray) else [] for x in snap[kind]], dtype=object)
        nearest = nearest_centre(lists, item_ids, vectors, centres)
        has = nearest >= 0
        results[kind] = (int(has.sum()), float((nearest[has] == truth[has]).mean()) if has.any() else None)
    (n_pos, accuracy), (n_neg, negative) = results["pos_items"], results["neg_items"]
    return ProbeResult(n_pos, len(users) - n_pos, accuracy, 1.0 / len(centres), n_neg, negative)


def probe_experiment(experiment_dir: Path, data_dir: Path) -> ProbeResult:
    """The probe for one experiment of a run on the planted log in ``data_dir``: the evaluated users of
    ``prepared/eval.parquet`` on its day, the raw content vectors of ``embeddings.parquet`` and the true
    centres and topics written beside them."""
    prepared = Path(experiment_dir) / "prepared"
    for name in ("eval.parquet", "history.parquet"):
        if not (prepared / name).is_file():
            raise ValueError(
                f"{prepared / name} not found: is {experiment_dir} an experiment directory of a run?"
            )
    evaluation = pd.read_parquet(prepared / "eval.parquet", columns=["user_id", "day"])
    if evaluation.empty:
        raise ValueError(f"{prepared / 'eval.parquet'} has no rows: nothing to probe")
    history = pd.read_parquet(prepared / "history.parquet")
    truth = read_truth(data_dir)
    item_ids, vectors = read_vectors(Path(data_dir))
    day = evaluation["day"].iloc[0]
    return history_probe(
        history, evaluation["user_id"].to_numpy(), day, item_ids, vectors, truth.centres, truth.user_topic
    )
