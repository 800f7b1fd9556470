"""One training pass: a feature space fitted on the pass's rows, a fresh model, Adam, the objective's batches.

``twotower.train`` runs two passes (selection without the last training day, then the refit on every
day); each trains one epoch at a time and hands out its state (weights, optimizer, batch generator) so that
a run can be resumed exactly. ``deterministic`` seeds every generator and switches on deterministic kernels.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from twotower.checkpoint import ModelBundle, save_checkpoint
from twotower.config import ModelConfig, TrainConfig
from twotower.model.batching import (
    DayCatalog,
    PlayedBatches,
    SoftmaxBatches,
    encode_positives,
    positive_shares,
)
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.model.two_tower import TwoTower
from twotower.progress import bar as progress_bar


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed every generator and switch on deterministic kernels; restores the previous switch afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required for deterministic cuBLAS
    seed_all(seed)
    # On CUDA a few kernels have no deterministic version: warn rather than fail there.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@dataclass
class PassInputs:
    """What every pass of one ``train_model`` call shares (the tables are the prepared directory's)."""

    model_config: ModelConfig
    train_config: TrainConfig
    history: pd.DataFrame | None
    users: pd.DataFrame | None
    item_table: pd.DataFrame | None  # the content table: item_id, vector
    catalog: pd.DataFrame | None  # catalog.parquet: day, item_id, creator_id, ITEM_BASE, CREATOR_BASE
    device: torch.device
    progress: bool | None


def weights(model: TwoTower) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable weights (the frozen content table is rebuilt from the item table)."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


class TrainingPass:
    """Training on ``rows`` (train.parquet layout): the feature space fitted on them, a fresh model (initialised
    from torch's global generator as it stands), Adam, and the batches of the configured objective: the
    played rows (``bce``) or the positive rows with that day's catalog negatives (``softmax``)."""

    def __init__(self, inputs: PassInputs, rows: pd.DataFrame, seed: int):
        self.inputs, cfg = inputs, inputs.train_config
        self.features = FeatureSpace(inputs.model_config).fit(rows, inputs.users, inputs.item_table)
        self.generator = torch.Generator().manual_seed(seed)
        if cfg.objective == "bce":
            data = self.features.transform(rows, inputs.history, inputs.users)
        else:
            positives = rows[rows["label"] == 1].reset_index(drop=True)
            days, items = epoch_days(positives["day"]), positives["item_id"].to_numpy(np.int64)
            self.shares = positive_shares(days, items)
            data = encode_positives(self.features, positives, inputs.history, inputs.users, self.shares)
            catalog = DayCatalog.encode(
                self.features, inputs.catalog, np.unique(epoch_days(rows["day"])), self.shares
            )
        self.n_rows = len(data)
        has_content = self.features.content_ids_ is not None
        content = self.features.content_matrix(inputs.item_table) if has_content else None
        self.model = TwoTower(inputs.model_config, self.features.dims(), content).to(inputs.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        if cfg.objective == "bce":
            self.batches = PlayedBatches(data, cfg.batch_size, self.generator, inputs.device)
        else:
            self.batches = SoftmaxBatches(
                data,
                catalog,
                cfg.batch_size,
                cfg.negatives,
                self.generator,
                inputs.device,
                cfg.logq_correction,
            )

    def run_epoch(self, label: str) -> tuple[float, int, float]:
        """Train one epoch -> (mean loss weighted by the rows' weights, rows seen, seconds)."""
        model, device = self.model, self.inputs.device
        model.train()
        start = time.perf_counter()
        total, weight, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        bar = progress_bar(self.batches, label, enabled=self.inputs.progress is not False, leave=False)
        for step, item in enumerate(bar):
            loss, w, n = self.batches.loss(model, item)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * w
            weight += w
            seen += n
            if step % 20 == 0 and hasattr(bar, "set_postfix"):  # .item() syncs the GPU: not every step
                bar.set_postfix(loss=f"{(total / weight).item():.4f}")
        return float(total / weight.clamp_min(1e-12)), seen, time.perf_counter() - start

    def state(self) -> dict:
        """Weights, optimizer and batch generator: with the global RNG states, all a resumed epoch needs."""
        return {
            "weights": weights(self.model),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load(self, state: dict) -> None:
        """Continue from what ``state`` returned."""
        self.load_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def load_weights(self, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(values[name])

    def save(self, path: Path, meta: dict) -> None:
        """The model as a checkpoint (``twotower.checkpoint``) with ``meta``."""
        cfg = self.inputs
        save_checkpoint(
            path, ModelBundle(self.model, self.features, cfg.model_config, cfg.train_config, meta)
        )
