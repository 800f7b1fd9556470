"""Catalog retrieval in every run: evaluate one experiment's model and baselines and write its files.

Files in the experiment directory:

- ``retrieval.json``: per scorer (model, random, popularity, positive_popularity) the metrics of
  docs/retrieval.md for all users and the warm and cold slices, every count, and the median duration of the
  recommended items beside that of the targets;
- ``retrieval_per_user.parquet``: scorer, user_id, cold and every per-user value (for paired comparisons);
- ``topk.parquet``: the model's top 500 (user_id, rank, item_id, score) for every evaluated user, so anyone
  can recompute the metrics;
- ``inspect.parquet``: the top 100 of up to ``inspect_users`` users drawn with the run's seed, with item
  metadata; ``retrieval_popularity.png``: how popular the recommended items are against the catalog.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.checkpoint import ModelBundle
from twotower.config import Config
from twotower.data.prepared import PreparedTables
from twotower.io import write_atomic, write_json
from twotower.plots import plot_recommended_popularity
from twotower.retrieval.catalog_eval import (
    KS,
    SCORERS,
    RetrievalSetup,
    content_vectors,
    evaluate_lists,
    item_score_topk,
    model_topk,
    random_topk,
    retrieval_setup,
)

TOP_K = max(KS)
INSPECT_K = 100


def _write_parquet(frame: pd.DataFrame, path) -> None:
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def median_durations(topk: np.ndarray, setup: RetrievalSetup) -> dict[str, float | None]:
    """Median duration (s) of the items in the top 100 lists and of the targets."""
    seconds = setup.catalog.set_index("item_id")["item_duration_s"]
    listed = topk[:, :INSPECT_K]
    listed = listed[listed >= 0]
    med = lambda ids: float(np.nanmedian(seconds.reindex(ids).to_numpy())) if len(ids) else None  # noqa: E731
    return {"recommended@100": med(listed), "targets": med(setup.targets.items)}


def evaluate_retrieval(
    cfg: Config, bundle: ModelBundle, data: PreparedTables, item_table: pd.DataFrame | None, directory
) -> dict:
    """Catalog retrieval of the model and the baselines for one experiment; writes the files above and
    returns the retrieval.json payload."""
    setup = retrieval_setup(data)
    lists: dict[str, np.ndarray] = {}
    model_ids, model_scores, _ = model_topk(bundle, setup, data, TOP_K, cfg.retrieval.index)
    lists["model"] = model_ids
    lists["random"] = random_topk(setup, TOP_K, cfg.seed)
    lists["popularity"] = item_score_topk(setup.plays, setup, TOP_K)
    lists["positive_popularity"] = item_score_topk(setup.positives, setup, TOP_K)
    vectors = content_vectors(item_table, setup.catalog_ids)
    results = {name: evaluate_lists(lists[name], setup, cfg.retrieval.tail_plays, vectors) for name in SCORERS}

    payload = {
        "counts": setup.counts,
        "index": cfg.retrieval.index,
        "scorers": {name: {part: m.as_dict() for part, m in parts.items()} for name, parts in results.items()},
        "median_duration_s": {name: median_durations(lists[name], setup) for name in SCORERS},
    }
    write_json(directory / "retrieval.json", payload)
    per_user = pd.concat(
        [parts["all"].per_user.assign(scorer=name) for name, parts in results.items()], ignore_index=True
    )
    cold = pd.Series(setup.cold, index=setup.users["user_id"].to_numpy())
    per_user.insert(0, "scorer", per_user.pop("scorer"))
    per_user.insert(2, "cold", cold.reindex(per_user["user_id"].to_numpy()).to_numpy())
    _write_parquet(per_user, directory / "retrieval_per_user.parquet")
    _write_parquet(topk_frame(setup.users["user_id"].to_numpy(), model_ids, model_scores), directory / "topk.parquet")
    _write_parquet(inspection(setup, model_ids, model_scores, data.items, cfg.seed, cfg.retrieval.inspect_users), directory / "inspect.parquet")
    plot_recommended_popularity(
        {name: lists[name][:, :INSPECT_K] for name in ("model", "popularity", "positive_popularity")},
        setup.catalog_ids,
        setup.plays,
        directory / "retrieval_popularity.png",
    )
    return payload


def topk_frame(user_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Long format of lists (U, k): user_id, rank (1-based), item_id, score; padding dropped."""
    n_users, k = ids.shape
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(user_ids, np.int64), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n_users),
            "item_id": ids.reshape(-1),
            "score": scores.reshape(-1),
        }
    )
    return frame[frame["item_id"] >= 0].reset_index(drop=True)


def inspection(
    setup: RetrievalSetup, ids: np.ndarray, scores: np.ndarray, items: pd.DataFrame, seed: int, n_users: int
) -> pd.DataFrame:
    """The top 100 of ``n_users`` users drawn with ``seed`` (all users when fewer), with item metadata and
    whether the item was one of the user's targets."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(setup.users), size=min(n_users, len(setup.users)), replace=False))
    frame = topk_frame(setup.users["user_id"].to_numpy()[chosen], ids[chosen, :INSPECT_K], scores[chosen, :INSPECT_K])
    frame["cold"] = pd.Series(setup.cold, index=setup.users["user_id"].to_numpy()).reindex(frame["user_id"]).to_numpy()
    targets = setup.targets.take(chosen)
    keys = set(zip(setup.users["user_id"].to_numpy()[chosen][targets.rows()], targets.items, strict=True))
    frame["is_target"] = [(u, i) in keys for u, i in zip(frame["user_id"], frame["item_id"], strict=True)]
    catalog = setup.catalog.set_index("item_id")
    frame["item_duration_s"] = catalog["item_duration_s"].reindex(frame["item_id"]).to_numpy()
    frame["training_plays"] = pd.Series(setup.plays, index=setup.catalog_ids).reindex(frame["item_id"]).to_numpy()
    meta = [c for c in ("creator_id", "video_type", "upload_type", "music_id", "tags", "caption") if c in items]
    return frame.merge(items[["item_id", *meta]].drop_duplicates("item_id"), on="item_id", how="left")
