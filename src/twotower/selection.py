"""Choosing the epoch count on the held-out last training day: the held-out metrics and the rules.

Played re-ranking (objective ``bce``): the mean per-user AUC of the day's played rows (users with both
labels), or the weighted BCE when no user has both; the chosen epoch is the best one (the first of equals).

Catalog retrieval (objective ``softmax``): recall@100 of the day's positives over the day's whole catalog
(catalog.parquet rows of that day, every item scored exactly, nothing excluded). One day's recall moves by
about +-0.02 between epochs, so the best single epoch is partly luck: the chosen epoch is the one whose
recall averaged with its neighbours (epochs e - 1, e, e + 1, those that were trained) is highest, the
first of equals (``smoothed_best_epoch``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twotower.evaluate.metrics import mean_user_auc
from twotower.inference import predict
from twotower.model.batching import DayCatalog
from twotower.model.dataset import EncodedRows
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.model.objectives import weighted_bce
from twotower.model.two_tower import TwoTower

RECALL_K = 100
SMOOTHING_RULE = (
    "highest mean of the held-out metric over epochs e-1, e, e+1 (those trained); first of equals"
)
BEST_RULE = "best held-out metric (first of equals)"


def improves(name: str, value: float, best: float | None) -> bool:
    """Whether held-out ``value`` of metric ``name`` is strictly better than ``best`` (None: nothing yet)."""
    if best is None:
        return True
    return value < best if name == "bce" else value > best


def holdout_name(objective: str, rows: pd.DataFrame) -> str:
    """The held-out day's metric for ``objective``, from its rows alone: "recall@100" (softmax; a positive
    row exists), "auc" (bce; some user has both labels), "bce" (bce; none has) or "none" (nothing to score)."""
    if not len(rows):
        return "none"
    if objective == "softmax":
        return CatalogHoldout.name if (rows["label"] == 1).any() else "none"
    both = rows.groupby("user_id")["label"].agg(lambda s: s.min() != s.max()).any()
    return "auc" if both else "bce"


def make_holdout(
    name: str,
    features: FeatureSpace,
    rows: pd.DataFrame,
    history: pd.DataFrame | None,
    users: pd.DataFrame | None,
    catalog: pd.DataFrame | None,
) -> PlayedHoldout | CatalogHoldout:
    """The held-out evaluation named ``name`` (``holdout_name``) for the held-out day's ``rows``, encoded with
    the selection pass's ``features``; ``catalog``: catalog.parquet (for recall@100)."""
    if name == CatalogHoldout.name:
        day = int(epoch_days(rows["day"]).max())
        day_catalog = DayCatalog.encode(features, catalog, np.array([day]))
        return CatalogHoldout(features, rows, history, users, day_catalog, day)
    return PlayedHoldout(name, features.transform(rows, history, users), rows["user_id"].to_numpy())


def smoothed(values: list[float]) -> np.ndarray:
    """Centred 3-epoch moving average (n,): mean of values e-1, e, e+1 where they exist."""
    x = np.asarray(values, dtype=np.float64)
    total = x.copy()
    count = np.ones(len(x))
    total[1:] += x[:-1]
    count[1:] += 1
    total[:-1] += x[1:]
    count[:-1] += 1
    return total / count


def smoothed_best_epoch(values: list[float]) -> int:
    """1-based epoch with the highest ``smoothed`` value (the first of equals)."""
    return int(np.argmax(smoothed(values))) + 1 if values else 1


class PlayedHoldout:
    """The held-out day's played rows, scored by ``name``: "auc" (mean per-user) or "bce" (weighted)."""

    def __init__(self, name: str, data: EncodedRows, users: np.ndarray):
        self.name, self.data, self.users = name, data, users

    def __call__(self, model: TwoTower, batch_size: int, device: torch.device) -> float:
        logits = predict(model, self.data, batch_size, device)
        if self.name == "auc":
            return mean_user_auc(self.users, self.data.columns["label"].numpy(), logits)[0]
        label, weight = self.data.columns["label"], self.data.columns["weight"]
        return float(weighted_bce(torch.as_tensor(logits), label, weight))


class CatalogHoldout:
    """Recall@100 of the held-out day's positives over that day's catalog.

    Users: every user with a positive row that day; their user-side features are those of their first row
    that day (smallest ``ts_ms``, or ``hour`` without it). Targets: the day's positive items in its catalog.
    """

    name = f"recall@{RECALL_K}"

    def __init__(
        self,
        features: FeatureSpace,
        rows: pd.DataFrame,
        history: pd.DataFrame | None,
        users: pd.DataFrame | None,
        catalog: DayCatalog,
        day: int,
    ):
        day_rows = rows[epoch_days(rows["day"]) == day]
        positives = day_rows[day_rows["label"] == 1]
        order = (
            "ts_ms" if "ts_ms" in day_rows else "hour"
        )  # the first play of the day, as prepare's retrieval users
        first = day_rows[day_rows["user_id"].isin(positives["user_id"])].sort_values(order, kind="stable")
        first = first.drop_duplicates("user_id").sort_values("user_id").reset_index(drop=True)
        self.queries = features.transform(first, history, users, side="user")
        self.items = catalog.slice(day)
        item_ids = self.items.columns["item_key"].numpy()
        # targets as (user row, catalog position) pairs
        user_pos = pd.Index(first["user_id"]).get_indexer(positives["user_id"])
        item_pos = pd.Index(item_ids).get_indexer(positives["item_id"])
        pairs = np.unique(np.stack([user_pos, item_pos])[:, item_pos >= 0], axis=1)
        self.target_user, self.target_item = pairs
        self.n_targets = np.bincount(self.target_user, minlength=len(first))
        self.n_users = int((self.n_targets > 0).sum())

    def __call__(self, model: TwoTower, batch_size: int, device: torch.device) -> float:
        if not self.n_users:
            return float("nan")
        queries = torch.as_tensor(predict(model, self.queries, batch_size, device, "user"))
        keys = torch.as_tensor(predict(model, self.items, batch_size, device, "item"))
        k = min(RECALL_K, len(keys))
        top = torch.cat(
            [torch.topk(q @ keys.T, k, dim=1).indices for q in torch.split(queries, 1024)]
        ).numpy()
        # hit: target (u, i) appears in u's top k
        hit = (top[self.target_user] == self.target_item[:, None]).any(axis=1)
        hits = np.bincount(self.target_user, weights=hit, minlength=len(self.n_targets))
        has = self.n_targets > 0
        return float(np.mean(hits[has] / self.n_targets[has]))
