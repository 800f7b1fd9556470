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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from twotower.checkpoint import ModelBundle, save_checkpoint
from twotower.config import ModelConfig, TrainConfig
from twotower.distributed import Distributed
from twotower.model.batching import (
    DayCatalog,
    PlayedBatches,
    SoftmaxBatches,
    distributed_bce,
    distributed_softmax,
    encode_positives,
    positive_shares,
)
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.model.two_tower import TwoTower
from twotower.progress import bar as progress_bar
from twotower.stream.batches import StreamedPlayedBatches, StreamedSoftmaxBatches, StreamPlan
from twotower.stream.files import ExampleFiles, ExampleIndex


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


@dataclass
class StreamedRows:
    """One pass's rows left on disk (``[train] shuffle_buffer`` > 0): the prepared files, their index, the
    pass's days (days since 1970-01-01), the feature space fitted on those rows in the streaming pass and,
    for softmax, p_day of every (day, item) (``positive_shares``)."""

    files: ExampleFiles
    index: ExampleIndex
    days: list[int]
    features: FeatureSpace
    shares: pd.Series | None = None

    def n_rows(self, positives: bool) -> int:
        return int(self.index.counts(self.days, positives).sum())


def _rank_seed(seed: int, rank: int, stream: int) -> int:
    """A seed for generator ``stream`` of ``rank``, unrelated to ``seed``'s own sequence."""
    return int(np.random.SeedSequence([seed, rank, stream]).generate_state(1, np.uint64)[0] >> 1)


class _Objective(torch.nn.Module):
    """The model and one rank's loss as a single module: DistributedDataParallel synchronises the gradients
    of a module's ``forward``, and the objectives call the towers rather than ``TwoTower.forward``."""

    def __init__(self, model: TwoTower, loss: Callable):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, step):
        return self.loss(self.model, step)


class TrainingPass:
    """Training on ``rows``: a DataFrame (train.parquet layout, in memory) or ``StreamedRows``. The feature
    space fitted on them, a fresh model (initialised from torch's global generator as it stands), Adam, and
    the batches of the configured objective: the played rows (``bce``) or the positive rows with that day's
    catalog negatives (``softmax``). With ``dist`` (several processes), gradients are averaged over the ranks
    (``DistributedDataParallel``): in memory every rank draws the same batches and trains on its part of
    each; streamed, every rank reads its own row groups."""

    def __init__(self, inputs: PassInputs, rows: pd.DataFrame | StreamedRows, seed: int, dist: Distributed | None = None):
        self.inputs, cfg, self.dist = inputs, inputs.train_config, dist
        self.streamed = isinstance(rows, StreamedRows)
        rank = dist.rank if dist else 0
        # rank 0's batch generator is the one process's: a buffer holding every row gives its batches
        self.generator = torch.Generator().manual_seed(seed if rank == 0 or not self.streamed else _rank_seed(seed, rank, 0))
        self.order = torch.Generator().manual_seed(_rank_seed(seed, rank, 1))  # streamed: row group order
        if self.streamed:
            self.features = rows.features
            self.n_rows = rows.n_rows(positives=cfg.objective == "softmax")
            self.batches = self._streamed_batches(rows)
        else:
            self.features = FeatureSpace(inputs.model_config).fit(rows, inputs.users, inputs.item_table)
            self.batches = self._batches(rows)
        has_content = self.features.content_ids_ is not None
        content = self.features.content_matrix(inputs.item_table) if has_content else None
        self.model = TwoTower(inputs.model_config, self.features.dims(), content).to(inputs.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.step = self._distributed_step() if dist is not None else None

    def _batches(self, rows: pd.DataFrame):
        inputs, cfg = self.inputs, self.inputs.train_config
        if cfg.objective == "bce":
            data = self.features.transform(rows, inputs.history, inputs.users)
            self.n_rows = len(data)
            return PlayedBatches(data, cfg.batch_size, self.generator, inputs.device)
        positives = rows[rows["label"] == 1].reset_index(drop=True)
        days, items = epoch_days(positives["day"]), positives["item_id"].to_numpy(np.int64)
        self.shares = positive_shares(days, items)
        data = encode_positives(self.features, positives, inputs.history, inputs.users, self.shares)
        catalog = DayCatalog.encode(self.features, inputs.catalog, np.unique(epoch_days(rows["day"])), self.shares)
        self.n_rows = len(data)
        return SoftmaxBatches(
            data, catalog, cfg.batch_size, cfg.negatives, self.generator, inputs.device, cfg.logq_correction
        )

    def _streamed_batches(self, rows: StreamedRows):
        inputs, cfg, dist = self.inputs, self.inputs.train_config, self.dist
        world = dist.world_size if dist else 1
        if cfg.batch_size % world:
            raise ValueError(f"train.batch_size {cfg.batch_size} must be a multiple of the {world} processes")
        size, softmax = cfg.batch_size // world, cfg.objective == "softmax"
        plan = StreamPlan(rows.index, rows.days, softmax, size, dist, within_day=softmax)
        common = (rows.files, plan, self.features, inputs.users, cfg.shuffle_buffer, self.generator, self.order)
        if not softmax:
            return StreamedPlayedBatches(*common, inputs.device, batch_size=size)
        catalog = DayCatalog.encode(self.features, inputs.catalog, np.asarray(rows.days), rows.shares)
        return StreamedSoftmaxBatches(
            *common, inputs.device, batch_size=size, catalog=catalog, negatives=cfg.negatives, shares=rows.shares,
            logq_correction=cfg.logq_correction,
        )

    def _distributed_step(self) -> torch.nn.Module:
        cfg, dist = self.inputs.train_config, self.dist
        split = not self.streamed  # in memory every rank holds the whole batch
        if cfg.objective == "bce":
            loss = partial(distributed_bce, dist=dist, split=split)
        else:
            loss = partial(distributed_softmax, dist=dist, split=split, logq_correction=cfg.logq_correction)
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        # The content table is a frozen buffer: never broadcast it again after the start.
        return DistributedDataParallel(_Objective(self.model, loss), device_ids=ids, broadcast_buffers=False)

    def run_epoch(self, label: str) -> tuple[float, int, float]:
        """Train one epoch -> (mean loss weighted by the rows' weights, rows seen, seconds); with several
        processes, over every rank's rows."""
        model, device = self.model, self.inputs.device
        model.train()
        start = time.perf_counter()
        total, weight, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        bar = progress_bar(self.batches, label, enabled=self.inputs.progress is not False, leave=False)
        for step, item in enumerate(bar):
            if self.step is None:
                loss, w, n = self.batches.loss(model, item)
            else:
                loss, w, terms, n = self.step(item)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * w if self.step is None else terms
            weight += w
            seen += n
            if step % 20 == 0 and hasattr(bar, "set_postfix"):  # .item() syncs the GPU: not every step
                bar.set_postfix(loss=f"{(total / weight).item():.4f}")
        if self.dist is not None:
            total, weight = self.dist.sum(total), self.dist.sum(weight)
            seen = int(self.dist.sum(torch.tensor(seen, device=device)))
        return float(total / weight.clamp_min(1e-12)), seen, time.perf_counter() - start

    def state(self) -> dict:
        """Weights, optimizer and batch generators: with the global RNG states, all a resumed epoch needs."""
        return {
            "weights": weights(self.model),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "order": self.order.get_state(),
        }

    def load(self, state: dict) -> None:
        """Continue from what ``state`` returned."""
        self.load_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if "order" in state:
            self.order.set_state(state["order"])

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
