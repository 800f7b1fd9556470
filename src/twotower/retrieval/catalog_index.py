"""The item index of one catalog day: the item tower over every catalog item, in a FAISS index.

``catalog_index`` is the one place that embeds a catalog and indexes it: catalog evaluation in runs
(``catalog_eval.model_topk``), ``twotower index``, ``recommend`` and ``serve`` all call it. ``build_run_index``
is ``twotower index``: the validation day's catalog of a completed experiment, saved with the checkpoint's
hash (and, for HNSW, its recall@100 against exact search on the day's retrieval users).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.checkpoint import ModelBundle
from twotower.inference import embed_items, embed_users
from twotower.retrieval.index import ItemIndex, hnsw_recall
from twotower.retrieval.run_model import RunExperiment

RECALL_K = 100


def day_rows(catalog: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """The rows of ``day`` of a catalog table (catalog.parquet layout), in item id order."""
    rows = catalog[pd.to_datetime(catalog["day"]) == pd.Timestamp(day)]
    return rows.sort_values("item_id").reset_index(drop=True)


def catalog_index(
    bundle: ModelBundle, catalog_rows: pd.DataFrame, kind: str = "exact", **params
) -> tuple[ItemIndex, np.ndarray]:
    """Embed ``catalog_rows`` (C rows: item_id, creator_id, ITEM_BASE, CREATOR_BASE as of one day) with the
    item tower and index them. Returns the index and the vectors (C, d + 1) (last column the item bias), row
    i the item ``catalog_rows.item_id[i]``. ``params``: ``ItemIndex.build``'s HNSW parameters, ``threads``."""
    vectors = embed_items(bundle, catalog_rows)
    index = ItemIndex.build(catalog_rows["item_id"].to_numpy(np.int64), vectors, kind=kind, **params)
    return index, vectors


@dataclass(frozen=True)
class IndexReport:
    """What ``twotower index`` built for one experiment."""

    experiment: int
    directory: Path
    kind: str
    params: dict
    day: dt.date
    n_items: int
    recall: float | None  # HNSW recall@100 against exact search; None for an exact index
    recall_queries: int


def build_run_index(
    run: RunExperiment, kind: str = "exact", out: Path | None = None, *, overwrite: bool = False, **params
) -> IndexReport:
    """Index the validation day's catalog of ``run`` and save it (default ``experiment_<id>/index``).

    HNSW: its recall@100 against an exact index of the same vectors, over the queries of the day's
    retrieval users (retrieval_users.parquet; without them, a sample of the item vectors), goes into
    index.json (``hnsw_recall@100``) and the report."""
    catalog = run.prepared("catalog", run.val_day)
    if catalog is None or not len(catalog):
        raise ValueError(f"{run.directory / 'prepared'} has no catalog for {run.val_day}; rerun the experiment")
    catalog = day_rows(catalog, run.val_day)
    index, vectors = catalog_index(run.bundle, catalog, kind, **params)
    recall, n_queries = None, 0
    if kind != "exact":
        queries = _validation_queries(run)
        if not len(queries):  # no retrieval user: the items themselves as queries (a fixed sample)
            rng = np.random.default_rng(run.cfg.seed)
            queries = vectors[rng.choice(len(vectors), min(1000, len(vectors)), replace=False)].copy()
            queries[:, -1] = 1.0
        exact = ItemIndex.build(index.item_ids, vectors)
        recall, n_queries = hnsw_recall(exact, index, queries, min(RECALL_K, index.n)), len(queries)
    directory = Path(out) if out is not None else run.index_dir
    extra = {
        "run": str(run.run_dir.name),
        "experiment": run.exp.id,
        "day": run.val_day.isoformat(),
        f"hnsw_recall@{RECALL_K}": recall,
        "recall_queries": n_queries,
    }
    index.save(directory, run.checkpoint_sha256, overwrite=overwrite, extra=extra)
    return IndexReport(run.exp.id, directory, kind, index.params, run.val_day, index.n, recall, n_queries)


def _validation_queries(run: RunExperiment) -> np.ndarray:
    """Query vectors (U, d + 1) of the validation day's retrieval users, as catalog evaluation embeds them."""
    users = run.prepared("retrieval_users")
    if users is None or not len(users):
        return np.zeros((0, run.bundle.model_config.output_dim + 1), np.float32)
    history = run.prepared("history", run.val_day)
    return embed_users(run.bundle, users, history, run.prepared("users"))
