"""A user the service has never seen, from the plays a request gives: the user row and history lists.

The rules are prepare's (``data/features.py``, ``data/history.py``), applied to the given plays as if they
were the user's plays in the lookback window before the serving day:

- **positive**: the config's label rule (``fraction_watch > label.fraction_watch_above``, or any of
  ``label.or_events`` set on the play);
- **negative**: not positive and watched for less than the item's mean watch time, where the mean is over
  all users' plays of the item in the lookback window (the serving day's ``item_mean_watch_s``). Watch time
  = watch fraction x the item's duration. *Approximated*: prepare's mean also counts the user's own plays,
  which the service does not have; an item nobody played in the window has no mean, so its play is never a
  negative (prepare's join drops such plays too);
- **order**: most recent first: by timestamp (then the larger item id) when every play has one; without
  timestamps the list is taken as played in order, the last one the most recent. Each item appears once
  per list (its most recent qualifying play); lists are cut at ``history.max_items``;
- **base features** (USER_BASE): ``user_plays`` = the number of plays, ``user_pos_rate`` = (positives +
  smoothing x prior) / (plays + smoothing) with the serving day's global positive rate as prior,
  ``user_mean_watch_s`` = mean watch time, ``user_has_past`` = 1 when there is a play; with no play the
  user is cold (prior rate, zeros), exactly as prepare fills a user without a past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from twotower.config import LabelConfig


@dataclass(frozen=True)
class Plays:
    """n plays of one user: ``item_ids (n,) int64``, ``fractions (n,)`` (watch time / duration, may exceed
    1 for replays), ``timestamps (n,)`` float seconds or None, ``flags``: event name -> (n,) bool."""

    item_ids: np.ndarray
    fractions: np.ndarray
    timestamps: np.ndarray | None = None
    flags: dict[str, np.ndarray] | None = None


def positive_labels(plays: Plays, label: LabelConfig) -> np.ndarray:
    """The label rule of ``clean.label_expression`` on the given plays: (n,) bool."""
    positive = np.zeros(len(plays.item_ids), bool)
    if label.fraction_watch_above is not None:
        positive |= plays.fractions > label.fraction_watch_above
    for flag in label.or_events:
        positive |= np.asarray((plays.flags or {}).get(flag, np.zeros(len(positive), bool)), bool)
    return positive


def recent_first(item_ids: np.ndarray, keep: np.ndarray, order: np.ndarray, max_items: int) -> np.ndarray:
    """The distinct items of the plays where ``keep``, most recent first: ``order`` ranks the plays (0 = the
    most recent); an item's place is that of its most recent kept play. Cut at ``max_items``. (m,) int64."""
    plays = np.flatnonzero(keep)
    plays = plays[np.argsort(order[plays], kind="stable")]
    _, first = np.unique(item_ids[plays], return_index=True)
    return item_ids[plays[np.sort(first)]][:max_items].astype(np.int64)


def play_order(plays: Plays) -> np.ndarray:
    """Rank of each play, 0 = the most recent: by timestamp descending, then item id descending (history.py's
    order); without timestamps the given order reversed."""
    n = len(plays.item_ids)
    if plays.timestamps is None:
        return np.arange(n)[::-1].copy()
    by = np.lexsort((-plays.item_ids, -np.asarray(plays.timestamps, np.float64)))
    rank = np.empty(n, np.int64)
    rank[by] = np.arange(n)
    return rank


def new_user_rows(
    plays: Plays,
    *,
    user_id: int,
    day: dt.date,
    dow: int,
    hour: int,
    label: LabelConfig,
    smoothing: float,
    prior_rate: float,
    max_items: int,
    duration_s: np.ndarray,
    mean_watch_s: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One user row (user_id, day, dow, hour, USER_BASE, cold) and its history row (user_id, day, pos_items,
    neg_items) from ``plays``. ``duration_s`` / ``mean_watch_s`` (n,): the played items' duration and mean
    watch time over the window (NaN: nobody played it)."""
    n = len(plays.item_ids)
    positive = positive_labels(plays, label)
    watch_s = plays.fractions * duration_s
    with np.errstate(invalid="ignore"):
        negative = ~positive & (watch_s < mean_watch_s)  # NaN mean: never a negative
    order = play_order(plays)
    row = pd.DataFrame(
        {
            "user_id": [int(user_id)],
            "day": [day],
            "dow": [int(dow)],
            "hour": [int(hour)],
            "user_plays": [float(n)],
            "user_pos_rate": [(positive.sum() + smoothing * prior_rate) / (n + smoothing)],
            "user_mean_watch_s": [float(watch_s.sum() / n) if n else 0.0],
            "user_has_past": [np.int8(n > 0)],
            "cold": [n == 0],
        }
    )
    history = pd.DataFrame(
        {
            "user_id": [int(user_id)],
            "day": [day],
            "pos_items": [recent_first(plays.item_ids, positive, order, max_items)],
            "neg_items": [recent_first(plays.item_ids, negative, order, max_items)],
        }
    )
    return row, history
