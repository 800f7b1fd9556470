"""The recommendation service's core, loaded once: the model, the serving day's catalog index and user states.

``load_recommender`` does all the work at start-up: the validation day's catalog in a FAISS index (the
saved ``twotower index`` when it fits, else built), and the state at the start of the serving day of every
user with a play in the lookback window before it (``data.day_state``, one vectorised pass), embedded in one
batch with the context of ``recommend.prepared_hours``. A request then costs a lookup (or, for a history
given in the request, one user row through the user tower) and one FAISS search.

Concurrency: requests run in threads; the model is in eval mode and only read (``inference.predict`` runs
under ``torch.no_grad()``), FAISS searches only read the index, and the index leaves the process's OpenMP
thread count alone (``PROCESS_THREADS``): ``configure_threads`` sets it (and torch's) once at start-up.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from twotower.data.day_state import day_state
from twotower.inference import embed_users
from twotower.retrieval.catalog_index import catalog_index, day_rows
from twotower.retrieval.index import ItemIndex
from twotower.retrieval.new_user import Plays, new_user_rows
from twotower.retrieval.recommend import DEFAULT_K, item_details, json_value, prepared_hours
from twotower.retrieval.run_model import RunExperiment
from twotower.retrieval.sets import ItemSets
from twotower.retrieval.threads import PROCESS_THREADS

MAX_LISTED_UNKNOWN = 20


class RequestError(ValueError):
    """A request the service cannot answer; ``status`` is the HTTP status (4xx) to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def configure_threads(n: int = 1) -> None:
    """FAISS's OpenMP and torch's intra-op threads, once for the process: concurrent requests are
    parallel across requests, so each search and forward pass uses ``n`` (default 1) threads."""
    faiss.omp_set_num_threads(int(n))
    torch.set_num_threads(int(n))


@dataclass
class CatalogItems:
    """The serving day's C catalog items: ``ids (C,)`` ascending, ``records``: one JSON-ready metadata dict
    per item, ``duration_s (C,)`` and ``mean_watch_s (C,)`` (NaN: not played in the window).

    Each item's metadata is encoded as JSON once (``fragments``): a response is assembled from them,
    which is most of the cost of a request otherwise (k = 100 items of about 15 columns)."""

    ids: np.ndarray
    records: list[dict[str, Any]]
    duration_s: np.ndarray
    mean_watch_s: np.ndarray

    def __post_init__(self) -> None:
        # '"creator_id": 5, ...' (the object's inside, with its leading comma) per item
        self.fragments = ["".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in r.items()) for r in self.records]

    def positions(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalog positions, found) of ``item_ids``."""
        at = np.minimum(np.searchsorted(self.ids, item_ids), max(len(self.ids) - 1, 0))
        return at, self.ids[at] == item_ids if len(self.ids) else np.zeros(len(item_ids), bool)


@dataclass
class KnownUsers:
    """The U users with a state on the serving day: ``ids (U,)`` ascending, their query vectors
    ``queries (U, d + 1)`` (context hour ``hours (U,)``), ``seen`` item sets (U rows), and the rows and
    histories they were embedded from (to embed one again with another hour)."""

    ids: np.ndarray
    queries: np.ndarray
    hours: np.ndarray
    seen: ItemSets
    rows: pd.DataFrame
    history: pd.DataFrame

    def find(self, user_id: int) -> int | None:
        at = int(np.searchsorted(self.ids, user_id))
        return at if at < len(self.ids) and self.ids[at] == user_id else None


@dataclass
class NewUserRules:
    """What building a new user's state needs: the serving day's context and priors and the config's
    rules (see ``new_user.py``)."""

    day: dt.date
    dow: int
    prior_rate: float
    smoothing: float
    max_items: int
    label: Any  # config.LabelConfig


class Recommender:
    """Answers requests: the top k of the catalog for a known user or a given history (see ``serve.py``).

    ``embed(rows, history, users)`` -> query vectors is the user tower (None: a search core without a
    model, e.g. the benchmark's synthetic catalog; then only known users can be served)."""

    def __init__(
        self,
        index: ItemIndex,
        items: CatalogItems,
        users: KnownUsers,
        about: dict[str, Any],
        embed: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray] | None = None,
        rules: NewUserRules | None = None,
    ) -> None:
        if not np.array_equal(np.sort(index.item_ids), items.ids):
            raise ValueError("the index and the catalog hold different items; rebuild the index for this catalog")
        index.threads = PROCESS_THREADS  # set once by configure_threads, never per request
        self.index, self.items, self.users, self.about = index, items, users, about
        self._embed, self._rules = embed, rules

    @property
    def n_items(self) -> int:
        return len(self.items.ids)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.about, "catalog_items": self.n_items, "users_known": len(self.users.ids)}

    def check_k(self, k: int | None) -> int:
        k = min(DEFAULT_K, self.n_items) if k is None else int(k)
        if not 1 <= k <= self.n_items:
            raise RequestError(f"k must be between 1 and the catalog's {self.n_items} items, got {k}")
        return k

    def for_user(self, user_id: int, k: int | None = None, hour: int | None = None) -> str:
        """The top k of a known user (seen items excluded), as the JSON response body (see ``serve.py``);
        ``RequestError`` 404 for a user without a state."""
        k = self.check_k(k)
        row = self.users.find(int(user_id))
        if row is None:
            raise RequestError(
                f"user {user_id} has no play in the {self.about.get('lookback_days', '?')} days before "
                f"{self.about.get('serving_day')}: POST /recommend with their recent history "
                '({"user_id": ..., "history": [{"item_id": ..., "watch_fraction": ...}, ...]})',
                status=404,
            )
        query = self.users.queries[row : row + 1]
        if hour is not None and hour != self.users.hours[row]:
            query = self._embed_rows(self.users.rows.iloc[[row]].assign(hour=int(hour)), self.users.history)
        seen = self.users.seen.take(np.array([row]))
        used_hour = int(self.users.hours[row]) if hour is None else int(hour)
        return self._answer(int(user_id), query, seen, k, cold=False, state="known", hour=used_hour)

    def for_history(
        self, plays: Plays, k: int | None = None, user_id: int | None = None, hour: int | None = None
    ) -> str:
        """The top k of a user given by their recent plays (the given items excluded), as JSON."""
        k = self.check_k(k)
        if self._embed is None or self._rules is None:
            raise RequestError("this service has no user tower: only known users can be served", status=501)
        pos, found = self.items.positions(plays.item_ids)
        if not found.all():
            unknown = np.unique(plays.item_ids[~found])
            listed = ", ".join(map(str, unknown[:MAX_LISTED_UNKNOWN])) + (", ..." if len(unknown) > MAX_LISTED_UNKNOWN else "")
            raise RequestError(
                f"{len(unknown)} item id(s) of the history are not in the catalog of {self._rules.day}: {listed}"
            )
        r = self._rules
        row, history = new_user_rows(
            plays,
            user_id=-1 if user_id is None else int(user_id),
            day=r.day,
            dow=r.dow,
            hour=0 if hour is None else int(hour),
            label=r.label,
            smoothing=r.smoothing,
            prior_rate=r.prior_rate,
            max_items=r.max_items,
            duration_s=self.items.duration_s[pos],
            mean_watch_s=self.items.mean_watch_s[pos],
        )
        query = self._embed_rows(row, history)
        exclude = ItemSets.from_lists([np.unique(plays.item_ids)])
        return self._answer(user_id, query, exclude, k, cold=len(plays.item_ids) == 0, state="request", hour=int(row["hour"].iloc[0]))

    def _embed_rows(self, rows: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
        if self._embed is None:
            raise RequestError("this service has no user tower: it cannot embed another context", status=501)
        return self._embed(rows, history)

    def _answer(
        self, user_id: int | None, query: np.ndarray, exclude: ItemSets, k: int, *, cold: bool, state: str, hour: int
    ) -> str:
        ids, scores = self.index.search(query, k, exclude=exclude)
        found = ids[0] >= 0
        pos, _ = self.items.positions(ids[0][found])
        fragments = self.items.fragments
        listed = ", ".join(
            f'{{"rank": {rank}, "item_id": {item}, "score": {json.dumps(score)}{fragments[p]}}}'
            for rank, (item, score, p) in enumerate(
                zip(ids[0][found].tolist(), scores[0][found].tolist(), pos.tolist(), strict=True), start=1
            )
        )
        head = {
            "user_id": user_id,
            "day": self.about.get("serving_day"),
            "cold": cold,
            "state": state,
            "context": {"dow": self.about.get("serving_dow"), "hour": hour},
            "k": int(found.sum()),
            "excluded_seen": int(exclude.counts()[0]),
        }
        return f'{json.dumps(head)[:-1]}, "items": [{listed}]}}'


def serving_index(run: RunExperiment, catalog: pd.DataFrame, kind: str, index_dir: Path | None) -> tuple[ItemIndex, str]:
    """The index to serve from: ``index_dir`` (must be for this checkpoint and catalog), else the saved
    ``experiment_<id>/index`` when it is of ``kind`` and holds this catalog, else built now.
    Returns the index and where it came from."""
    ids = catalog["item_id"].to_numpy(np.int64)
    candidate = Path(index_dir) if index_dir is not None else run.index_dir
    if candidate.exists():
        saved = ItemIndex.load(candidate, run.checkpoint_sha256)  # another checkpoint: CheckpointMismatchError
        same_items = np.array_equal(np.sort(saved.item_ids), ids)
        if index_dir is not None and not same_items:
            raise ValueError(f"index {candidate} holds other items than the catalog of {run.val_day}; rebuild it with `twotower index`")
        if index_dir is not None or (saved.kind == kind and same_items):
            return saved, str(candidate)
    index, _ = catalog_index(run.bundle, catalog, kind)
    return index, "built at start-up"


def load_recommender(run: RunExperiment, kind: str = "exact", index_dir: Path | None = None) -> Recommender:
    """Everything a request needs for the run's validation day (the serving day), loaded once."""
    day = run.val_day
    catalog = day_rows(run.prepared("catalog", day), day)
    index, source = serving_index(run, catalog, kind, index_dir)
    state = day_state(run.cfg, day)  # every user with a play in the lookback window before the day
    static = run.prepared("users")
    static_index = pd.Index(static["user_id"].to_numpy(np.int64)) if static is not None else None

    def embed(rows: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
        """User rows -> query vectors; the static table cut to the rows' users first (a request has one)."""
        own = static
        if static is not None and len(rows) < len(static):
            pos = static_index.get_indexer(rows["user_id"].to_numpy(np.int64))
            own = static.iloc[np.unique(pos[pos >= 0])]
        return embed_users(run.bundle, rows, history, own)

    hours = prepared_hours(run, day, state.users["user_id"].to_numpy(np.int64))
    rows = state.users.assign(hour=hours)
    ids = rows["user_id"].to_numpy(np.int64)
    seen_rows = np.searchsorted(ids, state.seen["user_id"].to_numpy(np.int64))
    users = KnownUsers(
        ids,
        embed(rows, state.history) if len(rows) else np.zeros((0, index.d), np.float32),
        hours,
        ItemSets.from_pairs(seen_rows, state.seen["item_id"].to_numpy(np.int64), len(ids)),
        rows,
        state.history,
    )
    details = item_details(run, catalog)
    watch = state.item_watch.set_index("item_id")["item_mean_watch_s"]
    items = CatalogItems(
        ids=catalog["item_id"].to_numpy(np.int64),
        records=[{k: json_value(v) for k, v in r.items() if k != "item_id"} for r in details.to_dict("records")],
        duration_s=catalog["item_duration_s"].to_numpy(np.float64),
        mean_watch_s=watch.reindex(catalog["item_id"].to_numpy()).to_numpy(np.float64),
    )
    dow = (day - dt.date(1970, 1, 5)).days % 7  # 1970-01-05 was a Monday (0)
    about = {
        "model": f"{run.cfg.name} experiment {run.exp.id}",
        "run": run.run_dir.name,
        "checkpoint_sha256": run.checkpoint_sha256,
        "objective": run.bundle.train_config.objective if run.bundle.train_config else None,
        "serving_day": day.isoformat(),
        "serving_dow": dow,
        "lookback_days": run.cfg.history.lookback_days,
        "index": {"kind": index.kind, "params": index.params, "source": source},
    }
    rules = NewUserRules(day, dow, state.prior_rate, run.cfg.features.smoothing, run.cfg.history.max_items, run.cfg.label)
    return Recommender(index, items, users, about, embed, rules)
