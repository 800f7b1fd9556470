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

Row groups are read and encoded in a background thread, up to two ahead (``_Prefetch``), while the
training step runs; the random draws all stay in the training thread.

Memory: the buffer (``shuffle_buffer`` rows; softmax: the same again for the pool), the row group being
absorbed, two row groups loaded ahead and one batch being cut, whatever the number of rows.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twotower.distributed import Distributed
from twotower.model.batching import DayCatalog, PlayedBatches, SoftmaxBatches, encode_positives
from twotower.model.dataset import to_device
from twotower.model.feature_space import FeatureSpace
from twotower.stream.files import ExampleFiles, ExampleIndex
from twotower.stream.shuffle import Batcher, BatchPool, Rows, ShuffleBuffer, n_rows

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
    """Buffer rows -> a batch on ``device``. History rows stay int32 (``EncodedRows`` gives int64): the towers'
    ``embedding_bag`` takes either with the same result, and the copy to int64 was a tenth of the input time."""
    return to_device(rows, device)


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


class _Prefetch:
    """``load(item)`` for each of ``work`` in a background thread, at most two results ahead of the consumer.
    Reading Parquet, the history lookup and encoding release the GIL for most of their work, so on a second
    core they overlap the training step. Only loading happens there: every random draw stays in the
    consumer's thread, so the batches are the same as with loading in line. ``ahead``: rows loaded and not
    yet taken."""

    _DONE = object()

    def __init__(self, work: list, load: Callable[[object], Rows]):
        self.work, self.load = work, load
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ahead = 0

    def _put(self, value) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            for item in self.work:
                if self.stop.is_set():
                    return
                rows = self.load(item)
                with self.lock:
                    self.ahead += n_rows(rows)
                self._put((item, rows))
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_Failed(exc))

    def __iter__(self) -> Iterator[tuple[object, Rows]]:
        thread = threading.Thread(target=self._run, name="twotower-prefetch", daemon=True)
        thread.start()
        try:
            while (got := self.queue.get()) is not self._DONE:
                if isinstance(got, _Failed):
                    raise got.error
                with self.lock:
                    self.ahead -= n_rows(got[1])
                yield got
        finally:
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
            thread.join()


@dataclass
class _Failed:
    error: BaseException


class _Streamed:
    """What both objectives' streamed batches share: reading and encoding row groups (``_Prefetch``), and the
    step count."""

    def __init__(
        self, files: ExampleFiles, plan: StreamPlan, features: FeatureSpace, users: pd.DataFrame | None,
        capacity: int, generator: torch.Generator, order: torch.Generator, device: torch.device,
    ):  # fmt: skip
        self.files, self.plan, self.features, self.users = files, plan, features, users
        self.capacity, self.generator, self.order, self.device = capacity, generator, order, device
        self.columns = training_columns(features)
        self.max_held = 0  # the most rows held at once: buffers, batch being cut, row groups loaded
        self._loader: _Prefetch | None = None

    def __len__(self) -> int:
        return self.plan.steps

    def _shuffled(self, values: np.ndarray) -> np.ndarray:
        """``values`` in an order drawn from the order generator when the rows exceed the buffer, else as is:
        a buffer that holds every row permutes them all, so their arrival order changes nothing."""
        if self.plan.n_rows <= self.capacity or len(values) < 2:
            return values
        return values[torch.randperm(len(values), generator=self.order).numpy()]

    def _loaded(self, work: list, load: Callable[[object], Rows]) -> Iterator[tuple[object, Rows]]:
        self._loader = _Prefetch(work, load)
        return iter(self._loader)

    def _note(self, held: int) -> None:
        self.max_held = max(self.max_held, held + (self._loader.ahead if self._loader else 0))

    def _epoch(self) -> Iterator:
        """The steps, then ``None`` steps up to the plan's count (a rank that has run out of rows)."""
        count = 0
        for step in self._steps():
            count += 1
            yield step
        for _ in range(count, self.plan.steps):
            yield None

    def _steps(self) -> Iterator:
        raise NotImplementedError


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

    def _load(self, group: int) -> Rows:
        frame = self.files.read(group, self.columns, self.plan.days)
        return flatten(self.features.transform(frame, self.files.history_for(frame), self.users))

    def _steps(self) -> Iterator:
        buffer, batcher = ShuffleBuffer(self.capacity, self.generator, self.batch_size), Batcher(self.batch_size)
        for _, rows in self._loaded([int(g) for g in self._shuffled(self.plan.groups)], self._load):
            self._note(buffer.held + batcher.held + n_rows(rows))
            for piece in buffer.push(rows):
                for batch in batcher.push(piece):
                    yield to_batch(batch, self.device)
        for piece in buffer.flush():
            for batch in batcher.push(piece):
                yield to_batch(batch, self.device)
        if self.plan.n_rows <= self.capacity:
            # RandomSampler draws (and drops) a second permutation when its epoch ends: keep in step with it
            torch.randperm(self.plan.n_rows, generator=self.generator)
        for batch in batcher.flush():
            yield to_batch(batch, self.device)


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

    def _load(self, work: tuple[int, int]) -> Rows:
        day, group = self.plan.days[work[0]], work[1]
        frame = self.files.read(group, self.columns, [day], positives=True)
        history = self.files.history_for(frame)
        return flatten(encode_positives(self.features, frame, history, self.users, self.shares))

    def _steps(self) -> Iterator:
        """Day by day (its positives through a buffer emptied at the day's end, cut into batches), the
        batches through the pool that mixes days."""
        self.pool = BatchPool(self.capacity, self.generator)
        days = [int(k) for k in self._shuffled(np.arange(len(self.plan.days)))]
        work = [(k, int(g)) for k in days for g in self._shuffled(self.plan.day_groups(k))]
        current, buffer, batcher = None, None, None
        for (k, _), rows in self._loaded(work, self._load):
            if k != current:
                if current is not None:
                    yield from self._end_of_day(current, buffer, batcher)
                current = k
                buffer = ShuffleBuffer(self.capacity, self.generator, self.batch_size)
                batcher = Batcher(self.batch_size)
            self._note(buffer.held + batcher.held + n_rows(rows) + self.pool.held)
            for piece in buffer.push(rows):
                for batch in batcher.push(piece):
                    yield from self._pooled(k, batch)
        if current is not None:
            yield from self._end_of_day(current, buffer, batcher)
        for out in self.pool.flush():
            yield self._step(*out)

    def _end_of_day(self, k: int, buffer: ShuffleBuffer, batcher: Batcher) -> Iterator:
        for piece in buffer.flush():
            for batch in batcher.push(piece):
                yield from self._pooled(k, batch)
        for batch in batcher.flush():
            yield from self._pooled(k, batch)

    def _pooled(self, k: int, batch: Rows) -> Iterator:
        for out in self.pool.push((self.plan.days[k], batch), n_rows(batch)):
            yield self._step(*out)

    def _step(self, day: int, rows: Rows):
        negatives = self.catalog.sample(day, self.negatives, self.generator) if self.negatives else None
        return (
            to_batch(rows, self.device),
            to_device(negatives, self.device) if negatives is not None else None,
            self.catalog.size(day),
        )
