"""Inference: score (user, item) rows and embed users and items with a trained model.

One place for what evaluation, the retrieval index and serving all need. Rows are in the prepared
layout (``twotower.data.schema``): user side ``user_id, day, dow, hour, USER_BASE`` (+ the users table and
history snapshots), item side ``item_id, creator_id, ITEM_BASE, CREATOR_BASE``. With d = the model's
``output_dim``, ``embed_users(...) @ embed_items(...).T`` equals the logits: the last column is a constant 1
on the user side and the item bias on the item side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twotower.checkpoint import ModelBundle
from twotower.model.dataset import EncodedRows, to_device
from twotower.model.two_tower import TwoTower


@torch.no_grad()
def predict(
    model: TwoTower, data: EncodedRows, batch_size: int, device: torch.device, what: str = "logits"
) -> np.ndarray:
    """Run ``model`` (eval mode) over ``data`` in order -> logits [n] or user/item embeddings [n, d + 1]."""
    model.eval()
    fn = {"logits": model, "user": model.user_embeddings, "item": model.item_embeddings}[what]
    out = [
        fn(to_device(data[torch.arange(i, min(i + batch_size, len(data)))], device)).float().cpu()
        for i in range(0, len(data), batch_size)
    ]
    if not out:
        return np.zeros((0,) if what == "logits" else (0, model.cfg.output_dim + 1), np.float32)
    return torch.cat(out).numpy()


def score(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    history: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """Logits [n] for n rows in eval.parquet layout (user, item, day, context and base features)."""
    data = bundle.features.transform(rows.reset_index(drop=True), history, users, side="both")
    return predict(bundle.model, data, batch_size, bundle.device)


def embed_users(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    history: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """n user-side rows (user_id, day, dow, hour, USER_BASE) -> [n, d + 1] query vectors (last column 1)."""
    data = bundle.features.transform(rows.reset_index(drop=True), history, users, side="user")
    return predict(bundle.model, data, batch_size, bundle.device, "user")


def embed_items(bundle: ModelBundle, rows: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
    """n item-side rows (item_id, creator_id, ITEM_BASE, CREATOR_BASE as of a day) -> [n, d + 1] index
    vectors (last column the item bias)."""
    data = bundle.features.transform(rows.reset_index(drop=True), None, None, side="item")
    return predict(bundle.model, data, batch_size, bundle.device, "item")
