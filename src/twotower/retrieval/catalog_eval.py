"""Catalog retrieval of one experiment (docs/retrieval.md): the model and the baselines retrieve from the
whole validation-day catalog, seen items excluded, and are scored against what each user completed.

``retrieval_setup`` turns the prepared files (catalog.parquet, retrieval_users/targets, seen.parquet,
popularity.parquet) into aligned arrays; ``model_topk`` embeds the catalog and the users with the trained
towers and searches the FAISS index; the baselines rank by a seeded uniform score (``random``), by
training-window plays (``popularity``) and by positive plays (``positive_popularity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from twotower.checkpoint import ModelBundle
from twotower.data.prepared import PreparedTables
from twotower.inference import embed_users
from twotower.retrieval.catalog_index import catalog_index
from twotower.retrieval.index import ItemIndex
from twotower.retrieval.metrics import CatalogMetrics, catalog_metrics, tail_item_sets
from twotower.retrieval.sets import ItemSets

SCORERS = ("model", "random", "popularity", "positive_popularity")
KS = (10, 50, 100, 500)


@dataclass
class RetrievalSetup:
    """The validation day's catalog retrieval as arrays. C catalog items, U users (those with a target).

    ``catalog``: the catalog rows (item features as of the day), C rows in item id order; ``users``: the
    users' rows (user features as of the day's start), U rows; ``targets`` / ``seen``: item sets aligned with
    ``users``; ``plays`` / ``positives`` (C,): training-window plays and positive plays; ``counts``: users and
    targets before and after the exclusions."""

    catalog: pd.DataFrame
    users: pd.DataFrame
    targets: ItemSets
    seen: ItemSets
    cold: np.ndarray
    plays: np.ndarray
    positives: np.ndarray
    counts: dict

    @property
    def catalog_ids(self) -> np.ndarray:
        return self.catalog["item_id"].to_numpy(np.int64)


def retrieval_setup(data: PreparedTables) -> RetrievalSetup:
    """Read the retrieval files of a prepared experiment and apply the contract's exclusions: targets are
    the day's positive items in the catalog and not seen before; users are those left with a target."""
    catalog = data.read_extra("catalog")
    val_day = data.eval["day"].max() if len(data.eval) else catalog["day"].max()
    catalog = catalog[pd.to_datetime(catalog["day"]) == pd.to_datetime(val_day)].sort_values("item_id")
    catalog = catalog.reset_index(drop=True)
    users = data.read_extra("retrieval_users")
    targets = data.read_extra("retrieval_targets")
    seen = data.read_extra("seen")
    reachable = targets[targets["in_catalog"] & ~targets["seen"]]
    users = users[users["user_id"].isin(reachable["user_id"])].sort_values("user_id").reset_index(drop=True)
    code = pd.Index(users["user_id"].to_numpy())
    t_rows = code.get_indexer(reachable["user_id"].to_numpy())
    seen = seen[seen["user_id"].isin(code)]
    popularity = data.popularity.set_index("item_id")
    ids = catalog["item_id"].to_numpy(np.int64)
    counts = {
        "catalog items": len(catalog),
        "users with a positive play": int(targets["user_id"].nunique()),
        "positive (user, item) pairs": len(targets),
        "targets outside the catalog (unreachable)": int((~targets["in_catalog"]).sum()),
        "targets removed as already seen": int((targets["in_catalog"] & targets["seen"]).sum()),
        "targets": len(reachable),
        "users evaluated": len(users),
        "cold users evaluated": int(users["cold"].sum()),
    }
    return RetrievalSetup(
        catalog=catalog,
        users=users,
        targets=ItemSets.from_pairs(t_rows, reachable["item_id"].to_numpy(), len(users)),
        seen=ItemSets.from_pairs(code.get_indexer(seen["user_id"].to_numpy()), seen["item_id"].to_numpy(), len(users)),
        cold=users["cold"].to_numpy(bool),
        plays=popularity["plays"].reindex(ids).fillna(0).to_numpy(np.float64),
        positives=popularity["positives"].reindex(ids).fillna(0).to_numpy(np.float64) if "positives" in popularity else np.zeros(len(ids)),
        counts=counts,
    )


def model_topk(
    bundle: ModelBundle, setup: RetrievalSetup, data: PreparedTables, k: int, kind: str = "exact"
) -> tuple[np.ndarray, np.ndarray, ItemIndex]:
    """The model's top k per user: the catalog's item embeddings [C, d + 1] in a FAISS index
    (``catalog_index``, as ``twotower index`` builds it), queried with the users' embeddings [U, d + 1]
    (their inner product is the model's logit). -> (ids, scores, index)."""
    index, _ = catalog_index(bundle, setup.catalog, kind)
    queries = embed_users(bundle, setup.users, data.history, data.users)
    ids, scores = index.search(queries, k, exclude=setup.seen)
    return ids, scores, index


def item_score_topk(scores: np.ndarray, setup: RetrievalSetup, k: int) -> np.ndarray:
    """Top k per user of one score per catalog item (C,), seen items excluded, ties by smaller item id.

    Every user shares one global order, so each list is that order's first k items the user has not seen:
    the first k + (most seen items of any user) of it, the seen ones masked, compacted. (U, k) int64."""
    ids = setup.catalog_ids
    order = ids[np.lexsort((ids, -np.asarray(scores, np.float64)))]
    n_users = len(setup.users)
    width = min(len(ids), k + int(setup.seen.counts().max(initial=0)))
    head = np.broadcast_to(order[:width], (n_users, width))
    rows = np.broadcast_to(np.arange(n_users, dtype=np.int64)[:, None], head.shape)
    key = rows * (int(ids.max(initial=0)) + 1) + head
    seen_key = setup.seen.rows() * (int(ids.max(initial=0)) + 1) + setup.seen.items
    keep = ~np.isin(key, seen_key)
    rank = np.cumsum(keep, axis=1) - 1  # position of each kept entry in its user's list
    out = np.full((n_users, k), -1, dtype=np.int64)
    take = keep & (rank < k)
    out[rows[take], rank[take]] = head[take]
    return out


def random_topk(setup: RetrievalSetup, k: int, seed: int, chunk_floats: int = 1 << 24) -> np.ndarray:
    """Top k per user of a seeded uniform score per (user, item), drawn chunk of users by chunk; seen
    items excluded."""
    ids = setup.catalog_ids
    n_users, n_items = len(setup.users), len(ids)
    out = np.full((n_users, k), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    step = max(1, chunk_floats // max(n_items, 1))
    for start in range(0, n_users, step):
        stop = min(n_users, start + step)
        scores = rng.random((stop - start, n_items))
        seen = setup.seen.slice(start, stop)
        pos = np.searchsorted(ids, seen.items).clip(0, max(n_items - 1, 0))
        inside = ids[pos] == seen.items  # seen items outside the catalog are ignored
        scores[seen.rows()[inside], pos[inside]] = -np.inf
        width = min(k, n_items)
        top = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        finite = np.isfinite(np.take_along_axis(scores, top, axis=1))
        out[start:stop, :width] = np.where(finite, ids[top], -1)
    return out


def evaluate_lists(
    topk: np.ndarray,
    setup: RetrievalSetup,
    tail_plays: tuple[int, ...],
    item_vectors: np.ndarray | None,
) -> dict[str, CatalogMetrics]:
    """The catalog metrics of one scorer's lists for all users and the warm and cold slices."""
    common: dict = {
        "ks": KS,
        "tail_items": tail_item_sets(setup.catalog_ids, setup.plays, tail_plays),
        "catalog_ids": setup.catalog_ids,
        "item_plays": setup.plays,
        "item_vectors": item_vectors,
        "user_ids": setup.users["user_id"].to_numpy(),
    }
    return {
        "all": catalog_metrics(topk, setup.targets, per_user=True, **common),
        "warm": catalog_metrics(topk, setup.targets, users_mask=~setup.cold, **common),
        "cold": catalog_metrics(topk, setup.targets, users_mask=setup.cold, **common),
    }


def content_vectors(item_table: pd.DataFrame | None, catalog_ids: np.ndarray) -> np.ndarray | None:
    """The content table's vectors aligned with the catalog (C, dv); zeros for items without one; None
    without a content table."""
    if item_table is None or not len(item_table):
        return None
    vectors = np.stack(item_table["vector"].to_numpy()).astype(np.float32)
    pos = pd.Index(item_table["item_id"].to_numpy(np.int64)).get_indexer(catalog_ids)
    out = np.zeros((len(catalog_ids), vectors.shape[1]), np.float32)
    out[pos >= 0] = vectors[pos[pos >= 0]]
    return out
