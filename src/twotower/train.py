"""The training loop: Adam, early stopping on the last training day, the best epoch saved.

``train_model`` holds out the LAST training day (max ``day`` of train.parquet; never the validation day), fits
the feature space on the remaining days, trains with Adam and keeps the epoch with the best held-out mean
per-user AUC (users with both labels on that day; weighted BCE when no user has both). Checkpoint I/O is
``twotower.checkpoint``, scoring and embedding ``twotower.inference``.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from twotower.checkpoint import ModelBundle, resolve_device, save_checkpoint
from twotower.config import ModelConfig, TrainConfig
from twotower.evaluate.metrics import mean_user_auc
from twotower.inference import predict, to_device
from twotower.model.dataset import EncodedRows
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.model.two_tower import TwoTower
from twotower.progress import bar as progress_bar
from twotower.progress import say


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


def _holdout_metric(
    model: TwoTower, data: EncodedRows, users: np.ndarray, name: str, batch_size: int, device: torch.device
) -> float:
    logits = predict(model, data, batch_size, device)
    if name == "auc":
        return mean_user_auc(users, data.columns["label"].numpy(), logits)[0]
    label, weight = data.columns["label"], data.columns["weight"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logits), label, reduction="none"
    )
    return float((bce * weight).sum() / weight.sum().clamp_min(1e-12))


def _better(name: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if name == "auc" else value < best


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_df: pd.DataFrame,
    history_df: pd.DataFrame | None,
    users_df: pd.DataFrame | None,
    item_table: pd.DataFrame | None,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool | None = None,
) -> TrainResult:
    """Train on train.parquet rows minus the last day, early-stop on that day, save the best epoch to
    ``out_dir/model.pt``. The per-epoch bar shows only on a terminal; ``progress=True`` also prints one line
    per epoch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(train_config.device)
    with deterministic(seed, device):
        rows = train_df.reset_index(drop=True)
        days = epoch_days(rows["day"])
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
                if mean_user_auc(hold_users, hold_rows["label"].to_numpy(), np.zeros(len(hold_rows)))[1]
                else "bce"
            )

        content = features.content_matrix(item_table) if features.content_ids_ is not None else None
        model = TwoTower(model_config, features.dims(), content).to(device)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
        )
        # A BatchSampler yields index lists; EncodedRows gathers a whole batch per index list (no per-row Python).
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
            bar = progress_bar(
                loader, f"epoch {epoch}/{train_config.epochs}", enabled=progress is not False, leave=False
            )
            for step, batch in enumerate(bar):
                batch = to_device(batch, device)
                loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                w = batch["weight"].sum()
                total += loss.detach() * w
                weight += w
                seen += len(batch["label"])
                if step % 20 == 0 and hasattr(bar, "set_postfix"):  # .item() syncs the GPU: not every step
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
            say(
                f"epoch {epoch}: train loss {losses[-1]:.4f}, held-out {metric_name} {metrics[-1]:.4f}",
                enabled=bool(progress),
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
