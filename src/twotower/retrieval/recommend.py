"""``twotower recommend``: one user's top k of a day's catalog, with the user's features as training built them.

The user's state is taken as of the START of the day (default: the run's validation day):

- the validation day's retrieval users (those with a positive play that day) are in the prepared files
  (retrieval_users.parquet, history.parquet, seen.parquet): their rows are used as catalog evaluation used
  them, so the list equals the user's list in the run's topk.parquet;
- any other user or day is computed from the run's data with prepare's own functions
  (``data.day_state``), from the lookback window before the day only.

Context (day of week, hour): the day's weekday, and the hour given, else the hour of the user's first play
that day where the prepared rows have it (what catalog evaluation used), else 0 (the start of the day).
Seen items (played in the lookback window before the day) are excluded unless asked otherwise. A user with
no play in the window is cold: no past, empty history (the recommendation says so).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from twotower.data.day_state import day_state
from twotower.inference import embed_users
from twotower.retrieval.catalog_index import catalog_index, day_rows
from twotower.retrieval.run_model import RunExperiment
from twotower.retrieval.sets import ItemSets

DEFAULT_K = 100


@dataclass(frozen=True)
class UserQuery:
    """One user as the user tower reads them: ``row`` (user_id, day, dow, hour, USER_BASE, cold), the
    ``history`` row (user_id, day, pos_items, neg_items), ``seen`` item ids; ``state``: where it came from
    (``prepared``, ``computed`` from the events, or ``request`` for a history given to the service)."""

    row: pd.DataFrame
    history: pd.DataFrame
    seen: np.ndarray
    state: str

    @property
    def cold(self) -> bool:
        return bool(self.row["cold"].iloc[0])


@dataclass(frozen=True)
class Recommendation:
    """The top k of one user: ``items`` has rank, item_id, score and the item's metadata."""

    user_id: int | None
    day: dt.date
    cold: bool
    state: str
    dow: int
    hour: int
    excluded_seen: int
    items: pd.DataFrame

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the service's response and ``recommend --json``)."""
        return {
            "user_id": self.user_id,
            "day": self.day.isoformat(),
            "cold": self.cold,
            "state": self.state,
            "context": {"dow": self.dow, "hour": self.hour},
            "k": len(self.items),
            "excluded_seen": self.excluded_seen,
            "items": [{k: json_value(v) for k, v in row.items()} for row in self.items.to_dict("records")],
        }


def json_value(value: Any) -> Any:
    """A table cell as plain JSON: numpy scalars as Python numbers, NaN/NA as null, dates as ISO text."""
    if isinstance(value, np.ndarray):
        return [json_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.date | pd.Timestamp):
        return value.isoformat()
    return value


def item_details(run: RunExperiment, catalog: pd.DataFrame) -> pd.DataFrame:
    """Metadata of the catalog's items, one row per catalog row (same order): item_id, the items table's
    columns (items.parquet without ``in_train``), ``item_duration_s`` and ``training_plays`` (plays in the
    cleaned training window, popularity.parquet)."""
    out = catalog[["item_id"]].reset_index(drop=True)
    items = run.prepared("items")
    if items is not None:
        keep = [c for c in items.columns if c not in ("item_id", "in_train", "creator_id")]
        out = out.merge(items.drop_duplicates("item_id")[["item_id", *keep]], on="item_id", how="left")
    out.insert(1, "creator_id", catalog["creator_id"].to_numpy())
    out["item_duration_s"] = catalog["item_duration_s"].to_numpy()
    popularity = run.prepared("popularity")
    plays = popularity.set_index("item_id")["plays"] if popularity is not None else pd.Series(dtype=float)
    out["training_plays"] = plays.reindex(out["item_id"].to_numpy()).fillna(0).astype(np.int64).to_numpy()
    return out


def prepared_hours(run: RunExperiment, day: dt.date, user_ids: np.ndarray) -> np.ndarray:
    """The context hour of each user on ``day``: the hour of their first play that day where the prepared
    retrieval users have it (validation day only), else 0. (U,) int64."""
    hours = np.zeros(len(user_ids), np.int64)
    users = run.prepared("retrieval_users") if day == run.val_day else None
    if users is not None and len(users):
        pos = pd.Index(users["user_id"].to_numpy(np.int64)).get_indexer(np.asarray(user_ids, np.int64))
        hours[pos >= 0] = users["hour"].to_numpy(np.int64)[pos[pos >= 0]]
    return hours


def user_query(run: RunExperiment, user_id: int, day: dt.date, hour: int | None = None) -> UserQuery:
    """``user_id`` as of the start of ``day`` (see the module docstring)."""
    users = run.prepared("retrieval_users") if day == run.val_day else None
    if users is not None and (users["user_id"] == user_id).any():
        row = users[users["user_id"] == user_id].reset_index(drop=True)
        history = run.prepared("history", day)
        history = history[history["user_id"] == user_id].reset_index(drop=True)
        seen = run.prepared("seen")
        seen_ids = np.sort(seen.loc[seen["user_id"] == user_id, "item_id"].to_numpy(np.int64))
        state = "prepared"
    else:
        computed = day_state(run.cfg, day, [user_id])
        row = computed.users.assign(hour=prepared_hours(run, day, np.array([user_id])))
        history, seen_ids, state = computed.history, np.sort(computed.seen["item_id"].to_numpy(np.int64)), "computed"
    if hour is not None:
        row = row.assign(hour=int(hour))
    return UserQuery(row, history, seen_ids, state)


def day_catalog(run: RunExperiment, day: dt.date) -> pd.DataFrame:
    """The catalog of ``day`` (catalog.parquet layout, item id order): the prepared one for the run's days,
    else computed from the events as prepare computes it."""
    prepared = run.prepared("catalog", day)
    if prepared is not None and len(prepared):
        return day_rows(prepared, day)
    catalog = day_state(run.cfg, day, [], with_catalog=True).catalog
    if catalog is None or not len(catalog):
        raise ValueError(f"no item exists at the start of {day} in {run.cfg.data.path}: no catalog to recommend from")
    return catalog


def recommend(
    run: RunExperiment,
    user_id: int,
    k: int = DEFAULT_K,
    day: dt.date | None = None,
    *,
    include_seen: bool = False,
    hour: int | None = None,
) -> Recommendation:
    """The top ``k`` of ``day``'s catalog (default: the validation day) for ``user_id`` by the model's score
    (exact search; equal scores by the smaller item id), seen items excluded unless ``include_seen``."""
    day = day or run.val_day
    if hour is not None and not 0 <= hour <= 23:
        raise ValueError(f"--hour must be 0..23, got {hour}")
    catalog = day_catalog(run, day)
    if not 1 <= k <= len(catalog):
        raise ValueError(f"--k must be between 1 and the catalog's {len(catalog)} items, got {k}")
    query = user_query(run, int(user_id), day, hour)
    index, _ = catalog_index(run.bundle, catalog)
    vector = embed_users(run.bundle, query.row, query.history, run.prepared("users"))
    exclude = None if include_seen else ItemSets.from_lists([query.seen])
    ids, scores = index.search(vector, k, exclude=exclude)
    found = ids[0] >= 0
    details = item_details(run, catalog).set_index("item_id")
    items = details.loc[ids[0][found]].reset_index()
    items.insert(0, "rank", np.arange(1, int(found.sum()) + 1))
    items.insert(2, "score", scores[0][found].astype(np.float64))
    excluded = 0 if include_seen else int(np.isin(query.seen, catalog["item_id"].to_numpy()).sum())
    row = query.row.iloc[0]
    return Recommendation(
        int(user_id), day, query.cold, query.state, int(row["dow"]), int(row["hour"]), excluded, items
    )
