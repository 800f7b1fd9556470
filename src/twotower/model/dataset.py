"""The encoded training/scoring rows as a torch ``Dataset`` that returns whole batches."""

from __future__ import annotations

import torch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to ``device`` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class EncodedRows(torch.utils.data.Dataset):
    """Encoded rows. ``columns``: per-row tensors [n]; ``pos_hist`` / ``neg_hist``: content-table rows of each
    distinct (user, day) history, [n_histories, L] (0 = padding), gathered per batch through ``hist_row``.
    ``self[idx]`` with a list/tensor of row indices returns a whole batch (use with a BatchSampler)."""

    def __init__(self, columns: dict[str, torch.Tensor], pos_hist: torch.Tensor, neg_hist: torch.Tensor):
        self.columns, self.pos_hist, self.neg_hist = columns, pos_hist, neg_hist

    def __len__(self) -> int:
        return len(self.columns["label"])

    def __getitem__(self, idx) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        batch = {k: v[idx] for k, v in self.columns.items() if k != "hist_row"}
        rows = self.columns["hist_row"][idx]
        batch["pos_hist"] = self.pos_hist[rows].long()
        batch["neg_hist"] = self.neg_hist[rows].long()
        return batch
