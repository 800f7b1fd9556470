"""Training batches for the two objectives; every random draw comes from one ``torch.Generator``.

``PlayedBatches`` (objective ``bce``): the played rows in a random order, ``batch_size`` at a time (a
``RandomSampler`` + ``BatchSampler`` feeding a ``DataLoader`` that gathers a whole batch per index list).

``SoftmaxBatches`` (objective ``softmax``): the positive rows, batches drawn within one day (each day's
rows shuffled and cut into batches, then the order of all batches shuffled), each with ``negatives`` items
drawn uniformly, with replacement, from that day's catalog (``DayCatalog``). Every candidate therefore
carries that day's point-in-time item features, and its share ``p_day`` of that day's positives (for the
log-frequency correction, ``twotower.model.objectives``).

Because the generator is the only source of randomness of the batch order and the negatives, saving its
state after an epoch (``torch.Generator.get_state``) and restoring it reproduces every later epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from twotower.model.dataset import EncodedRows, to_device
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.model.objectives import bce_loss, bce_terms, softmax_loss, softmax_terms
from twotower.model.two_tower import Batch, TwoTower


def day_label(day: int) -> str:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'."""
    return str(pd.Timestamp(int(day), unit="D").date())


def positive_shares(days: np.ndarray, items: np.ndarray) -> pd.Series:
    """Positive rows' days and item ids (n,) -> p_day(item): the item's share of its day's positives,
    indexed by (day, item_id)."""
    frame = pd.DataFrame({"day": days, "item_id": items})
    counts = frame.groupby(["day", "item_id"]).size()
    return counts / counts.groupby(level="day").transform("sum")


def share_of(shares: pd.Series, days: np.ndarray, items: np.ndarray) -> np.ndarray:
    """p_day of each (day, item) pair (n,) -> float32 (n,); 0 for an item with no positive that day."""
    position = shares.index.get_indexer(pd.MultiIndex.from_arrays([days, items]))
    values = shares.to_numpy(np.float32)
    return np.where(position >= 0, values[np.clip(position, 0, None)], 0.0).astype(np.float32)


class PlayedBatches:
    """Played rows (``EncodedRows``) in a random order, ``batch_size`` at a time; yields batches on ``device``."""

    def __init__(self, data: EncodedRows, batch_size: int, generator: torch.Generator, device: torch.device):
        sampler = BatchSampler(RandomSampler(data, generator=generator), batch_size, drop_last=False)
        # batch_size=None: the dataset gathers each index list itself (no per-row Python)
        self.loader = DataLoader(
            data, sampler=sampler, batch_size=None, num_workers=0, pin_memory=device.type == "cuda"
        )
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # Eager, as iterating a DataLoader is: each iterator draws a seed from torch's global generator when
        # created, and the progress bar (tqdm.auto) calls iter() once on construction and once more to loop.
        # Keeping both draws keeps the dropout masks, and so the results, those of the loop before this class.
        return (to_device(batch, self.device) for batch in iter(self.loader))

    @staticmethod
    def loss(model: TwoTower, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        """-> (weighted BCE, the batch's total weight, rows)"""
        return bce_loss(model, batch), batch["weight"].sum(), len(batch["label"])


class DayCatalog:
    """The catalog's items of each day, encoded for the item tower: ``rows`` sorted by day (``EncodedRows``
    with ``item_key`` and ``p_day`` columns), ``days`` the sorted distinct days (days since 1970-01-01)."""

    def __init__(self, rows: EncodedRows, row_days: np.ndarray):
        self.rows = rows
        self.days, self.starts, self.sizes = np.unique(row_days, return_index=True, return_counts=True)

    @classmethod
    def encode(
        cls, features: FeatureSpace, catalog: pd.DataFrame, days: np.ndarray, shares: pd.Series | None = None
    ) -> DayCatalog:
        """catalog.parquet rows (day, item_id, creator_id, ITEM_BASE, CREATOR_BASE) of ``days`` -> a DayCatalog.
        Every one of ``days`` must have catalog rows. ``shares``: p_day (``positive_shares``); None = zeros."""
        row_days = epoch_days(catalog["day"])
        keep = np.isin(row_days, days)
        missing = sorted(set(days.tolist()) - set(row_days[keep].tolist()))
        if missing:
            raise ValueError(
                f"catalog.parquet has no items for training day {day_label(missing[0])}: the softmax objective "
                "draws each day's negatives from that day's catalog (re-run prepare to write it)"
            )
        order = np.argsort(row_days[keep], kind="stable")
        sub = catalog[keep].iloc[order].reset_index(drop=True)
        sub_days = row_days[keep][order]
        rows = features.transform(sub, side="item")
        items = sub["item_id"].to_numpy(np.int64)
        rows.columns["item_key"] = torch.tensor(items)
        p_day = share_of(shares, sub_days, items) if shares is not None else np.zeros(len(items), np.float32)
        rows.columns["p_day"] = torch.as_tensor(p_day)
        return cls(rows, sub_days)

    def size(self, day: int) -> int:
        """|C_day|"""
        return int(self.sizes[np.searchsorted(self.days, day)])

    def slice(self, day: int) -> EncodedRows:
        """The day's catalog rows, in catalog order."""
        k = int(np.searchsorted(self.days, day))
        idx = torch.arange(int(self.starts[k]), int(self.starts[k] + self.sizes[k]))
        return EncodedRows(
            {c: v[idx] for c, v in self.rows.columns.items()}, self.rows.pos_hist, self.rows.neg_hist
        )

    def sample(self, day: int, n: int, generator: torch.Generator) -> Batch:
        """n items of ``day``'s catalog, uniformly with replacement -> an item-side batch of n rows."""
        k = int(np.searchsorted(self.days, day))
        idx = int(self.starts[k]) + torch.randint(int(self.sizes[k]), (n,), generator=generator)
        return self.rows[idx]


def encode_positives(
    features: FeatureSpace,
    rows: pd.DataFrame,
    history: pd.DataFrame | None,
    users: pd.DataFrame | None,
    shares: pd.Series,
) -> EncodedRows:
    """Positive rows (train.parquet layout) -> ``EncodedRows`` with the raw ``user_key`` / ``item_key`` (for
    the accidental-hit mask), ``day`` (days since 1970-01-01) and ``p_day`` [n] columns added."""
    data = features.transform(rows, history, users)
    days = epoch_days(rows["day"])
    items = rows["item_id"].to_numpy(np.int64)
    data.columns["user_key"] = torch.tensor(rows["user_id"].to_numpy(np.int64))
    data.columns["item_key"] = torch.tensor(items)
    data.columns["day"] = torch.tensor(days)
    data.columns["p_day"] = torch.as_tensor(share_of(shares, days, items))
    return data


class DayBatchSampler:
    """Index batches of at most ``batch_size`` rows that each lie within one day: each day's rows shuffled and
    cut into batches, then the order of all batches shuffled (``generator`` only)."""

    def __init__(self, days: np.ndarray, batch_size: int, generator: torch.Generator):
        self.groups = [torch.as_tensor(np.flatnonzero(days == d)) for d in np.unique(days)]
        self.batch_size, self.generator = batch_size, generator

    def __len__(self) -> int:
        return sum(-(-len(g) // self.batch_size) for g in self.groups)

    def __iter__(self) -> Iterator[torch.Tensor]:
        batches: list[torch.Tensor] = []
        for group in self.groups:
            shuffled = group[torch.randperm(len(group), generator=self.generator)]
            batches += list(torch.split(shuffled, self.batch_size))
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[k]


class SoftmaxBatches:
    """Within-day batches of positive rows with ``negatives`` catalog items of the same day each; yields
    (rows, negatives or None, |C_day|) on ``device``."""

    def __init__(
        self,
        positives: EncodedRows,
        catalog: DayCatalog,
        batch_size: int,
        negatives: int,
        generator: torch.Generator,
        device: torch.device,
        logq_correction: bool = True,
    ):
        self.positives, self.catalog, self.negatives = positives, catalog, negatives
        self.generator, self.device, self.logq_correction = generator, device, logq_correction
        self.sampler = DayBatchSampler(positives.columns["day"].numpy(), batch_size, generator)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Batch, Batch | None, int]]:
        for idx in self.sampler:
            rows = self.positives[idx]
            day = int(rows["day"][0])
            negatives = self.catalog.sample(day, self.negatives, self.generator) if self.negatives else None
            yield (
                to_device(rows, self.device),
                to_device(negatives, self.device) if negatives is not None else None,
                self.catalog.size(day),
            )

    def loss(
        self, model: TwoTower, step: tuple[Batch, Batch | None, int]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """-> (weighted softmax cross-entropy, the batch's total weight, rows)"""
        rows, negatives, n_catalog = step
        loss = softmax_loss(model, rows, negatives, n_catalog, self.logq_correction)
        return loss, rows["weight"].sum(), len(rows["weight"])


# ---- losses of one process among several (DistributedDataParallel averages the ranks' gradients) ----------
#
# Every rank returns N * (its rows' weighted loss sum) / (the whole batch's weight): DDP's average over N
# ranks is then the whole batch's weighted mean loss, the one process's loss, whatever each rank's share of
# rows or weight. ``split``: every rank holds the whole batch (the in-memory path) and scores its part of
# it; otherwise each rank holds its own rows (streamed) and the total weight is summed over ranks.
# Each returns (loss to backpropagate, this rank's weight, its weighted loss sum, its rows).


def _idle(model: TwoTower, dist, split: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """A step without rows on this rank: every parameter in the graph with a zero gradient, so that the
    gradient all-reduce still matches the other ranks'."""
    zero = sum(p.sum() for p in model.parameters()) * 0.0
    if not split:
        dist.sum(zero.detach())  # the other ranks sum the step's weight: take part
    return zero, zero.detach(), zero.detach(), 0


def distributed_bce(model: TwoTower, batch: Batch | None, dist, split: bool):
    """The weighted BCE of this rank's rows of a played batch (see above)."""
    if batch is None:
        return _idle(model, dist, split)
    if split:
        start, stop = dist.part(len(batch["label"]))
        total = batch["weight"].sum()
        batch = {k: v[start:stop] for k, v in batch.items()}
    mine = batch["weight"].sum()
    if not split:
        total = dist.sum(mine)
    terms = bce_terms(model(batch), batch["label"], batch["weight"]).sum()
    return terms * dist.world_size / total.clamp_min(1e-12), mine.detach(), terms.detach(), len(batch["label"])


def distributed_softmax(model: TwoTower, step, dist, split: bool, logq_correction: bool):
    """The softmax loss of this rank's rows of a within-day batch (see above). ``split``: every rank scores
    its part of the whole batch against all of the batch's candidates (as one process would); otherwise its
    own rows against its own rows' items and the negatives (in-batch negatives within the rank)."""
    if step is None:
        return _idle(model, dist, split)
    rows, negatives, n_catalog = step
    n = len(rows["weight"])
    part = dist.part(n) if split else (0, n)
    mine = rows["weight"][part[0] : part[1]].sum()
    total = rows["weight"].sum() if split else dist.sum(mine)
    terms = softmax_terms(model, rows, negatives, n_catalog, logq_correction, part).sum()
    return terms * dist.world_size / total.clamp_min(1e-12), mine.detach(), terms.detach(), part[1] - part[0]
