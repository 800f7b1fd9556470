"""Bounded shuffling of encoded rows: a shuffle buffer of rows and a pool of batches.

Rows are dicts of per-row tensors (first dimension n); the history columns ``pos_hist`` / ``neg_hist`` are
[n, width] content rows (0 = padding) whose width varies between row groups: they are padded with zeros to
the widest (the towers' mean over a history ignores padding, so the width changes nothing).

``ShuffleBuffer`` (a vectorised reservoir): rows enter until ``capacity`` are held; after that, every
arriving row takes the place of one held row drawn at random, which leaves. Rows therefore leave in a
random order that mixes them within about ``capacity`` rows of the input, and at the end the rest leave in
one random permutation. With ``capacity`` at least the number of rows, nothing leaves before the end:
the output is ``torch.randperm(n)`` of the input order -- the in-memory path's ``RandomSampler`` exactly.

``BatchPool``: whole batches held until they exceed ``capacity`` rows, then a random held batch leaves each
time one arrives; at the end the rest leave in one random permutation (with everything held: the in-memory
``DayBatchSampler``'s shuffle of all batches).

Every draw comes from the ``torch.Generator`` given, so a saved generator state reproduces the order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Rows = dict[str, torch.Tensor]
HISTORY = ("pos_hist", "neg_hist")


def n_rows(rows: Rows) -> int:
    return len(next(iter(rows.values()))) if rows else 0


def take(rows: Rows, idx: torch.Tensor | slice) -> Rows:
    return {k: v[idx] for k, v in rows.items()}


def _pad(value: torch.Tensor, width: int) -> torch.Tensor:
    return value if value.shape[1] >= width else torch.nn.functional.pad(value, (0, width - value.shape[1]))


def concat(parts: list[Rows]) -> Rows:
    """Rows of several parts, in order (history columns padded to the widest)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if key in HISTORY:
            width = max(v.shape[1] for v in values)
            values = [_pad(v, width) for v in values]
        out[key] = torch.cat(values)
    return out


class RowStore:
    """Up to ``capacity`` rows in preallocated tensors that grow (doubling) as rows arrive."""

    def __init__(self, capacity: int):
        self.capacity, self.size = capacity, 0
        self.data: Rows = {}

    def _reserve(self, rows: Rows, needed: int) -> None:
        allocated = n_rows(self.data)
        if not self.data:
            size = min(self.capacity, max(needed, 1024))
            self.data = {k: v.new_zeros((size, *v.shape[1:])) for k, v in rows.items()}
            return
        for key in HISTORY:  # a wider history than any held: widen the store
            if key in rows and rows[key].shape[1] > self.data[key].shape[1]:
                self.data[key] = _pad(self.data[key], rows[key].shape[1])
        if needed > allocated:
            size = min(self.capacity, max(needed, 2 * allocated))
            grown = {k: v.new_zeros((size, *v.shape[1:])) for k, v in self.data.items()}
            for k, v in grown.items():
                v[: self.size] = self.data[k][: self.size]
            self.data = grown

    def _write(self, at: torch.Tensor | slice, rows: Rows) -> None:
        for k, v in rows.items():
            target = self.data[k]
            if k in HISTORY:
                target[at] = 0
                target[at, : v.shape[1]] = v
            else:
                target[at] = v

    def append(self, rows: Rows) -> None:
        n = n_rows(rows)
        self._reserve(rows, self.size + n)
        self._write(slice(self.size, self.size + n), rows)
        self.size += n

    def swap(self, slots: torch.Tensor, rows: Rows) -> Rows:
        """The held rows at ``slots`` (copies), replaced by ``rows`` (as many)."""
        self._reserve(rows, self.size)
        out = take(self.data, slots)
        self._write(slots, rows)
        return out

    def drain(self, order: torch.Tensor) -> Rows:
        """The held rows in ``order`` (a permutation of range(size)); the store is emptied."""
        out = take(self.data, order)
        self.data, self.size = {}, 0
        return out


class ShuffleBuffer:
    """Rows out in a random order, at most ``capacity`` held (module docstring). ``push`` yields the rows that
    leave, ``piece`` at a time; ``flush`` yields the rest."""

    def __init__(self, capacity: int, generator: torch.Generator, piece: int = 4096):
        if capacity < 1:
            raise ValueError("a shuffle buffer holds at least one row")
        self.store, self.generator, self.piece = RowStore(capacity), generator, piece

    @property
    def held(self) -> int:
        return self.store.size

    def push(self, rows: Rows) -> Iterator[Rows]:
        n, cap = n_rows(rows), self.store.capacity
        free = min(cap - self.store.size, n)
        if free:
            self.store.append(take(rows, slice(0, free)))
        start = free
        while start < n:
            k = min(n - start, cap)
            slots = torch.randperm(cap, generator=self.generator)[:k]
            # Pieces of distinct slots: swapping piece by piece leaves exactly what one swap of all would.
            for p in range(0, k, self.piece):
                part = slots[p : p + self.piece]
                yield self.store.swap(part, take(rows, slice(start + p, start + p + len(part))))
            start += k

    def flush(self) -> Iterator[Rows]:
        if self.store.size:
            rows = self.store.drain(torch.randperm(self.store.size, generator=self.generator))
            for p in range(0, n_rows(rows), self.piece):
                yield take(rows, slice(p, p + self.piece))


class Batcher:
    """Rows in, batches of exactly ``batch_size`` out (the remainder waits for more rows, or ``flush``)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.parts: list[Rows] = []
        self.held = 0

    def push(self, rows: Rows) -> Iterator[Rows]:
        self.parts.append(rows)
        self.held += n_rows(rows)
        if self.held < self.batch_size:
            return
        rows, self.parts = concat(self.parts), []
        n, b = self.held, self.batch_size
        full = n - n % b
        for start in range(0, full, b):
            yield take(rows, slice(start, start + b))
        self.parts, self.held = ([take(rows, slice(full, n))], n - full) if full < n else ([], 0)

    def flush(self) -> Iterator[Rows]:
        if self.held:
            rows, self.parts, self.held = concat(self.parts), [], 0
            yield rows


class BatchPool:
    """Whole batches, at most ``capacity`` rows held beyond the newest batch (module docstring)."""

    def __init__(self, capacity: int, generator: torch.Generator):
        self.capacity, self.generator = capacity, generator
        self.batches: list = []
        self.sizes: list[int] = []
        self.held = 0

    def push(self, batch, size: int) -> Iterator:
        self.batches.append(batch)
        self.sizes.append(size)
        self.held += size
        while self.held > self.capacity and len(self.batches) > 1:
            k = int(torch.randint(len(self.batches), (1,), generator=self.generator))
            self.held -= self.sizes.pop(k)
            yield self.batches.pop(k)

    def flush(self) -> Iterator:
        order = torch.randperm(len(self.batches), generator=self.generator).tolist() if self.batches else []
        batches, self.batches, self.sizes, self.held = self.batches, [], [], 0
        for k in order:
            yield batches[k]
