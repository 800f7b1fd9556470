"""Training loop, early stopping, checkpoints and scoring for the two-tower model.

``train_model`` holds out the LAST training day (max ``day`` of train.parquet; never the validation day), fits
the feature space on the remaining days, trains with Adam and keeps the epoch with the best held-out mean
per-user AUC (users with both labels on that day; weighted BCE when no user has both). The checkpoint is one
``torch.save``'d dict of plain values and tensors: model config, train config, feature vocabularies and
scalers, layer sizes and weights, so ``load_checkpoint`` rebuilds the model from the file alone.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm.auto import tqdm

from twotower.config import ModelConfig, TrainConfig
from twotower.evaluate.metrics import ranking_metrics
from twotower.model.features import Encoded, FeatureSpace, day_number
from twotower.model.two_tower import TwoTower

CHECKPOINT_FORMAT = "twotower-checkpoint/1"


@dataclass
class ModelBundle:
    """A trained model with everything needed to encode raw rows for it."""

    model: TwoTower
    features: FeatureSpace
    model_config: ModelConfig
    train_config: TrainConfig | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int
    train_loss: list[float]  # per epoch: weighted BCE over the training rows
    holdout_metric: list[float]  # per epoch: see holdout_metric_name
    holdout_metric_name: str  # "auc" (mean per-user, higher is better), "bce" (lower is better) or "none"
    holdout_day: str | None
    examples_per_s: float
    n_train: int
    n_holdout: int


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device):
    """Seed every generator and switch on deterministic kernels; restores the previous switch afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required for deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # On CUDA a few kernels have no deterministic version: warn rather than fail there.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Mean over users with both labels of the ROC AUC of their rows -> (mean, n_users): the ``auc`` of
    the results table (``twotower.evaluate.metrics``), so early stopping and reporting agree."""
    result = ranking_metrics(users, np.arange(len(users)), (np.asarray(labels) > 0).astype(np.int8), scores)
    auc = result.values["auc"]
    return (float("nan") if auc is None else float(auc)), result.n_users


def _with_creator(rows: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    """Fill ``creator_id`` from items.parquet when the rows lack it."""
    if "creator_id" in rows or items is None or "creator_id" not in items or "item_id" not in rows:
        return rows
    creators = items.drop_duplicates("item_id").set_index("item_id")["creator_id"]
    return rows.assign(creator_id=rows["item_id"].map(creators))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def _predict(
    model: TwoTower, data: Encoded, batch_size: int, device: torch.device, what: str = "logits"
) -> np.ndarray:
    """Run ``model`` (eval mode) over ``data`` in order -> logits [n] or user/item embeddings [n, d + 1]."""
    model.eval()
    fn = {"logits": model, "user": model.user_embeddings, "item": model.item_embeddings}[what]
    out = [
        fn(_to(data[torch.arange(i, min(i + batch_size, len(data)))], device)).float().cpu()
        for i in range(0, len(data), batch_size)
    ]
    if not out:
        return np.zeros((0,) if what == "logits" else (0, model.cfg.output_dim + 1), np.float32)
    return torch.cat(out).numpy()


def _holdout_metric(
    model: TwoTower, data: Encoded, users: np.ndarray, name: str, batch_size: int, device: torch.device
) -> float:
    logits = _predict(model, data, batch_size, device)
    if name == "auc":
        return per_user_auc(users, data.columns["label"].numpy(), logits)[0]
    label, weight = data.columns["label"], data.columns["weight"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logits), label, reduction="none"
    )
    return float((bce * weight).sum() / weight.sum().clamp_min(1e-12))


def _better(name: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if name == "auc" else value < best


def save_checkpoint(path: Path, bundle: ModelBundle) -> None:
    """One dict of plain values and CPU tensors (loads with ``weights_only=True``)."""
    cpu: dict[int, torch.Tensor] = {}  # the towers share the content table: keep one CPU copy
    state = {}
    for key, value in bundle.model.state_dict().items():
        ptr = value.data_ptr()
        if ptr not in cpu:
            cpu[ptr] = value.detach().cpu()
        state[key] = cpu[ptr]
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": bundle.model_config.model_dump(mode="json"),
            "train_config": bundle.train_config.model_dump(mode="json") if bundle.train_config else None,
            "features": bundle.features.state_dict(),
            "dims": bundle.features.dims(),
            "state_dict": state,
            "meta": bundle.meta,
        },
        path,
    )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Rebuild model and feature space from a checkpoint file alone; the model is in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    cfg = ModelConfig.model_validate(ckpt["model_config"])
    model = TwoTower(cfg, ckpt["dims"])
    model.load_state_dict(ckpt["state_dict"])
    train_cfg = TrainConfig.model_validate(ckpt["train_config"]) if ckpt["train_config"] else None
    features = FeatureSpace.from_state_dict(ckpt["features"], cfg)
    return ModelBundle(
        model.to(resolve_device(str(device))).eval(), features, cfg, train_cfg, ckpt.get("meta", {})
    )


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_df: pd.DataFrame,
    history_df: pd.DataFrame | None,
    items_df: pd.DataFrame | None,
    users_df: pd.DataFrame | None,
    item_table: pd.DataFrame | None,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool | None = None,
) -> TrainResult:
    """Train on train.parquet rows minus the last day, early-stop on that day, save the best epoch to
    ``out_dir/model.pt``. ``progress=None`` shows the bar only on a terminal."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(train_config.device)
    with deterministic(seed, device):
        rows = _with_creator(train_df.reset_index(drop=True), items_df)
        days = day_number(rows["day"])
        hold = days == days.max()
        if hold.all():  # a single training day: nothing to hold out, keep the last epoch
            hold[:] = False
        fit_rows, hold_rows = rows[~hold], rows[hold]
        features = FeatureSpace(model_config).fit(fit_rows, users_df, item_table)
        train_set = features.transform(fit_rows, history_df, users_df)
        hold_set = features.transform(hold_rows, history_df, users_df)
        hold_users = hold_rows["user_id"].to_numpy()
        if not len(hold_rows):
            metric_name = "none"
        else:
            metric_name = (
                "auc"
                if per_user_auc(hold_users, hold_rows["label"].to_numpy(), np.zeros(len(hold_rows)))[1]
                else "bce"
            )

        content = features.content_matrix(item_table) if features.content_ids is not None else None
        model = TwoTower(model_config, features.dims(), content).to(device)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
        )
        # A BatchSampler yields index lists; Encoded gathers a whole batch per index list (no per-row Python).
        generator = torch.Generator().manual_seed(seed)
        sampler = BatchSampler(
            RandomSampler(train_set, generator=generator), train_config.batch_size, drop_last=False
        )
        loader = DataLoader(
            train_set, sampler=sampler, batch_size=None, num_workers=0, pin_memory=device.type == "cuda"
        )
        bundle = ModelBundle(model, features, model_config, train_config)
        path = out_dir / "model.pt"

        losses: list[float] = []
        metrics: list[float] = []
        best, best_epoch, stale, seen, train_seconds = None, 0, 0, 0, 0.0
        for epoch in range(1, train_config.epochs + 1):
            model.train()
            start = time.perf_counter()
            total, weight = torch.zeros((), device=device), torch.zeros((), device=device)
            bar = tqdm(
                loader,
                desc=f"epoch {epoch}/{train_config.epochs}",
                disable=None if progress is None else not progress,
                leave=False,
            )
            for step, batch in enumerate(bar):
                batch = _to(batch, device)
                loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                w = batch["weight"].sum()
                total += loss.detach() * w
                weight += w
                seen += len(batch["label"])
                if step % 20 == 0:  # .item() synchronises the GPU: not every step
                    bar.set_postfix(loss=f"{(total / weight).item():.4f}")
            train_seconds += time.perf_counter() - start
            losses.append(float(total / weight.clamp_min(1e-12)))
            if metric_name == "none":
                metrics.append(float("nan"))
                improved = True
            else:
                metrics.append(
                    _holdout_metric(
                        model, hold_set, hold_users, metric_name, train_config.eval_batch_size, device
                    )
                )
                improved = _better(metric_name, metrics[-1], best)
            if improved:
                best, best_epoch, stale = metrics[-1], epoch, 0
                bundle.meta = {
                    "epoch": epoch,
                    "metric": metrics[-1],
                    "metric_name": metric_name,
                    "seed": seed,
                }
                save_checkpoint(path, bundle)
            else:
                stale += 1
                if stale > train_config.patience:
                    break
            if progress:
                tqdm.write(
                    f"epoch {epoch}: train loss {losses[-1]:.4f}, held-out {metric_name} {metrics[-1]:.4f}"
                )

    held_day = str(pd.Timestamp(int(days.max()), unit="D").date()) if metric_name != "none" else None
    return TrainResult(
        model_path=path,
        best_epoch=best_epoch,
        train_loss=losses,
        holdout_metric=metrics,
        holdout_metric_name=metric_name,
        holdout_day=held_day,
        examples_per_s=seen / max(train_seconds, 1e-9),
        n_train=len(fit_rows),
        n_holdout=len(hold_rows),
    )


def _encode(bundle: ModelBundle, rows: pd.DataFrame, history, users, items, side: str) -> Encoded:
    return bundle.features.transform(
        _with_creator(rows.reset_index(drop=True), items), history, users, side=side
    )


def _device_of(bundle: ModelBundle) -> torch.device:
    return next(iter(bundle.model.state_dict().values())).device


def score(
    bundle: ModelBundle,
    rows_df: pd.DataFrame,
    history_df: pd.DataFrame | None = None,
    users_df: pd.DataFrame | None = None,
    items_df: pd.DataFrame | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """Logits [n] for rows in eval.parquet layout (user, item, day, context and base features)."""
    data = _encode(bundle, rows_df, history_df, users_df, items_df, "both")
    return _predict(bundle.model, data, batch_size, _device_of(bundle))


def embed_users(
    bundle: ModelBundle,
    rows_df: pd.DataFrame,
    history_df: pd.DataFrame | None = None,
    users_df: pd.DataFrame | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """User-side rows (user_id, day, dow, hour, USER_BASE) -> [n, d + 1] query vectors (last column 1)."""
    data = _encode(bundle, rows_df, history_df, users_df, None, "user")
    return _predict(bundle.model, data, batch_size, _device_of(bundle), "user")


def embed_items(
    bundle: ModelBundle, rows_df: pd.DataFrame, items_df: pd.DataFrame | None = None, batch_size: int = 8192
) -> np.ndarray:
    """Item-side rows (item_id, creator_id, ITEM_BASE, CREATOR_BASE as of a day) -> [n, d + 1] index vectors
    (last column the item bias); ``embed_users(...) @ embed_items(...).T`` are the logits."""
    data = _encode(bundle, rows_df, None, None, items_df, "item")
    return _predict(bundle.model, data, batch_size, _device_of(bundle), "item")
