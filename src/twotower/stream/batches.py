"""Training batches streamed from prepared Parquet through bounded shuffle buffers (``[train] shuffle_buffer``).

``StreamPlan`` says which row groups this process reads in a pass and how many batches it yields per epoch:
one process reads them all; with several (``torchrun``) the row groups are dealt to the ranks once, the
largest first to the rank with the fewest rows (so ranks read disjoint row groups and hold near-equal
rows), and a rank that runs out of batches before the others yields ``None`` steps (no rows) so that every
rank takes the same number of optimiser steps.

``StreamedPlayedBatches`` (objective ``bce``): each epoch the rank's row groups are read one at a time (in
file order when its rows fit in the buffer, else in an order drawn from the order generator), encoded
(``FeatureSpace.transform`` with that row group's history snapshots) and passed through one
``ShuffleBuffer``; batches are cut from what leaves it. With a buffer holding every row this is the
in-memory ``PlayedBatches``, draw for draw.

``StreamedSoftmaxBatches`` (objective ``softmax``): day by day (in day order when the rows fit, else in a
drawn order), the day's positive rows pass through a ``ShuffleBuffer`` emptied at the day's end, are cut
into within-day batches, and the batches pass through a ``BatchPool`` that mixes days; each batch then gets
its day's catalog negatives. With a buffer holding every row this is the in-memory ``SoftmaxBatches``.

Memory: the buffer (``shuffle_buffer`` rows; softmax: the same again for the pool), the row group being
absorbed and one batch being cut, whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from twotower.distributed import Distributed
from twotower.model.batching import DayCatalog, PlayedBatches, SoftmaxBatches, encode_positives
from twotower.model.dataset import to_device
from twotower.model.feature_space import FeatureSpace
from twotower.stream.files import ExampleFiles, ExampleIndex
from twotower.stream.shuffle import HISTORY, Batcher, BatchPool, Rows, ShuffleBuffer, n_rows

BASE_COLUMNS = ("user_id", "item_id", "creator_id", "day", "dow", "hour", "label", "weight")


def training_columns(features: FeatureSpace) -> list[str]:
    """The train.parquet columns that encoding needs."""
    return [*BASE_COLUMNS, *(c for g, s in features.scalers_.items() if g != "user_static" for c in s.columns)]


def flatten(encoded) -> Rows:
    """``EncodedRows`` -> per-row tensors, each row with its own history rows [n, width] (int32)."""
    cols = {k: v for k, v in encoded.columns.items() if k != "hist_row"}
    rows = encoded.columns["hist_row"]
    cols["pos_hist"], cols["neg_hist"] = encoded.pos_hist[rows], encoded.neg_hist[rows]
    return cols


def to_batch(rows: Rows, device: torch.device) -> dict[str, torch.Tensor]:
    """Buffer rows -> a batch on ``device`` (history rows as int64, as ``EncodedRows`` returns them)."""
    return to_device({k: v.long() if k in HISTORY else v for k, v in rows.items()}, device)


def deal(sizes: np.ndarray, ranks: int) -> np.ndarray:
    """Owner rank of each row group (sizes (G,)): largest first, each to the rank holding fewest rows."""
    owner = np.full(len(sizes), -1)
    load = np.zeros(ranks, np.int64)
    for g in np.argsort(-sizes, kind="stable"):
        if sizes[g] > 0:
            owner[g] = int(np.argmin(load))
            load[owner[g]] += sizes[g]
    return owner


class StreamPlan:
    """The row groups of one pass (rows on ``days``; positives only for softmax) this rank reads, and the
    number of batches of ``batch_size`` rows every rank yields per epoch."""

    def __init__(
        self, index: ExampleIndex, days: list[int], positives: bool, batch_size: int,
        dist: Distributed | None = None, within_day: bool = False,
    ):  # fmt: skip
        self.days = sorted(days)
        counts = index.counts(self.days, positives)  # (G, k)
        ranks, rank = (dist.world_size, dist.rank) if dist else (1, 0)
        owner = deal(counts.sum(axis=1), ranks)
        self.counts = np.where((owner == rank)[:, None], counts, 0)  # this rank's rows per row group and day
        self.groups = np.flatnonzero(self.counts.sum(axis=1) > 0)  # file order
        self.n_rows = int(self.counts.sum())

        def steps(r: int) -> int:
            mine = counts[owner == r]
            if within_day:
                return int(sum(-(-int(n) // batch_size) for n in mine.sum(axis=0)))
            return -(-int(mine.sum()) // batch_size)

        self.steps = max(steps(r) for r in range(ranks))

    def day_groups(self, k: int) -> np.ndarray:
        """Row groups with rows on the k-th day of the pass, in file order."""
        return np.flatnonzero(self.counts[:, k] > 0)


class _Streamed:
    """What both objectives' streamed batches share: reading and encoding row groups."""

    def __init__(
        self, files: ExampleFiles, plan: StreamPlan, features: FeatureSpace, users: pd.DataFrame | None,
        capacity: int, generator: torch.Generator, order: torch.Generator, device: torch.device,
    ):  # fmt: skip
        self.files, self.plan, self.features, self.users = files, plan, features, users
        self.capacity, self.generator, self.order, self.device = capacity, generator, order, device
        self.columns = training_columns(features)
        self.max_held = 0  # the most rows held at once (buffer, pool, batch being cut, row group absorbed)

    def __len__(self) -> int:
        return self.plan.steps

    def _shuffled(self, values: np.ndarray) -> np.ndarray:
        """``values`` in an order drawn from the order generator when the rows exceed the buffer, else as is:
        a buffer that holds every row permutes them all, so their arrival order changes nothing."""
        if self.plan.n_rows <= self.capacity or len(values) < 2:
            return values
        return values[torch.randperm(len(values), generator=self.order).numpy()]

    def _read(self, group: int, days: list[int], positives: bool) -> pd.DataFrame:
        return self.files.read(group, self.columns, days, positives)

    def _note(self, held: int) -> None:
        self.max_held = max(self.max_held, held)


class StreamedPlayedBatches(_Streamed):
    """Played rows (objective ``bce``) through one shuffle buffer; yields batches on ``device``, then ``None``
    steps up to the plan's step count."""

    loss = staticmethod(PlayedBatches.loss)

    def __init__(self, *args, batch_size: int, **kw):
        super().__init__(*args, **kw)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator:
        # As PlayedBatches: one draw from torch's global generator per iterator (a DataLoader's base seed),
        # so that dropout masks, and so the results, are the in-memory path's.
        torch.empty((), dtype=torch.int64).random_()
        return self._epoch()

    def _encode(self, frame: pd.DataFrame) -> Rows:
        return flatten(self.features.transform(frame, self.files.history_for(frame), self.users))

    def _epoch(self) -> Iterator:
        buffer, batcher = ShuffleBuffer(self.capacity, self.generator, self.batch_size), Batcher(self.batch_size)
        count = 0
        for group in self._shuffled(self.plan.groups):
            rows = self._encode(self._read(int(group), self.plan.days, positives=False))
            self._note(buffer.held + batcher.held + n_rows(rows))
            for piece in buffer.push(rows):
                for batch in batcher.push(piece):
                    count += 1
                    yield to_batch(batch, self.device)
        for piece in buffer.flush():
            for batch in batcher.push(piece):
                count += 1
                yield to_batch(batch, self.device)
        if self.plan.n_rows <= self.capacity:
            # RandomSampler draws (and drops) a second permutation when its epoch ends: keep in step with it
            torch.randperm(self.plan.n_rows, generator=self.generator)
        for batch in batcher.flush():
            count += 1
            yield to_batch(batch, self.device)
        for _ in range(count, self.plan.steps):
            yield None


class StreamedSoftmaxBatches(_Streamed):
    """Positive rows (objective ``softmax``) in within-day batches with catalog negatives of their day;
    yields (rows, negatives or None, |C_day|) on ``device``, then ``None`` steps up to the plan's count."""

    def __init__(
        self, *args, batch_size: int, catalog: DayCatalog, negatives: int, shares: pd.Series,
        logq_correction: bool = True, **kw,
    ):  # fmt: skip
        super().__init__(*args, **kw)
        self.batch_size, self.catalog, self.negatives, self.shares = batch_size, catalog, negatives, shares
        self.logq_correction = logq_correction

    def loss(self, model, step) -> tuple[torch.Tensor, torch.Tensor, int]:
        """As ``SoftmaxBatches.loss``."""
        return SoftmaxBatches.loss(self, model, step)

    def __iter__(self) -> Iterator:
        return self._epoch()

    def _encode(self, frame: pd.DataFrame) -> Rows:
        history = self.files.history_for(frame)
        return flatten(encode_positives(self.features, frame, history, self.users, self.shares))

    def _day(self, k: int) -> Iterator[Rows]:
        """The k-th pass day's batches (its positives through a buffer emptied at the day's end)."""
        day = self.plan.days[k]
        buffer, batcher = ShuffleBuffer(self.capacity, self.generator, self.batch_size), Batcher(self.batch_size)
        for group in self._shuffled(self.plan.day_groups(k)):
            rows = self._encode(self._read(int(group), [day], positives=True))
            self._note(buffer.held + batcher.held + n_rows(rows) + self.pool.held)
            for piece in buffer.push(rows):
                yield from batcher.push(piece)
        for piece in buffer.flush():
            yield from batcher.push(piece)
        yield from batcher.flush()

    def _epoch(self) -> Iterator:
        self.pool = BatchPool(self.capacity, self.generator)
        count = 0
        for k in self._shuffled(np.arange(len(self.plan.days))):
            for batch in self._day(int(k)):
                for out in self.pool.push((self.plan.days[int(k)], batch), n_rows(batch)):
                    count += 1
                    yield self._step(*out)
        for out in self.pool.flush():
            count += 1
            yield self._step(*out)
        for _ in range(count, self.plan.steps):
            yield None

    def _step(self, day: int, rows: Rows):
        negatives = self.catalog.sample(day, self.negatives, self.generator) if self.negatives else None
        return (
            to_batch(rows, self.device),
            to_device(negatives, self.device) if negatives is not None else None,
            self.catalog.size(day),
        )
