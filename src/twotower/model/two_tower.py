"""The two-tower model: a user tower and an item tower that return embeddings, and a thin task on top.

logit(user, item) = <user_embedding, item_embedding> + item_bias

The towers return embeddings; the losses (the sheet's BCE, the retrieval softmax) live in
``twotower.model.objectives``, so both objectives share the same towers and features.

Every feature group is switched on or off in ``ModelConfig`` (the series' ablations):

user tower   pos_mean_hist_emb / neg_mean_hist_emb: mean of the frozen content vectors over the history ids
             (EmbeddingBag, mean mode, padding excluded) + an "empty history" flag each; context: day of week
             and hour of day embeddings; user_base: USER_BASE numerics; user_static: static_* numerics + a
             "has a users.parquet row" flag + an embedding per categorical cat_* column; user_id: id embedding.
item tower   content: the frozen content vector + a "not in the content table" flag; item_base: ITEM_BASE
             numerics; creator: CREATOR_BASE numerics (+ a creator id embedding, rare creators in bucket 0);
             item_id: id embedding. It also outputs a scalar item bias: on short-video data whether a video is
             watched to the end depends strongly on the video itself.

Batches are the dicts produced by ``FeatureSpace.transform`` (``twotower.model.feature_space``); B = batch size,
L = history length, D = content dimension, d = ``output_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twotower.config import ModelConfig

Batch = dict[str, Tensor]


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout blocks, then a linear output layer (no activation: it feeds a dot product)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class ContentTable(nn.Module):
    """The frozen content vectors [n_content + 1, D]; row 0 is padding (zeros). A buffer, so never trained,
    but saved in the state dict (the checkpoint must rebuild the model alone) and moved with ``.to``."""

    def __init__(self, table: Tensor):
        super().__init__()
        self.register_buffer("weight", table.float())

    def mean_of(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """rows [B, L] (0 = padding) -> (mean vector over the non-padding rows [B, D], empty flag [B, 1]).
        ``padding_idx`` makes the mean exact over known items; an all-padding bag gives zeros."""
        mean = F.embedding_bag(rows, self.weight, mode="mean", padding_idx=0)
        return mean, (rows == 0).all(dim=1, keepdim=True).float()


class UserTower(nn.Module):
    def __init__(self, cfg: ModelConfig, dims: dict[str, int], content: ContentTable | None):
        super().__init__()
        self.features = set(cfg.user_features)
        self.content = content if self.features & {"pos_mean_hist_emb", "neg_mean_hist_emb"} else None
        width = 0
        for name in ("pos_mean_hist_emb", "neg_mean_hist_emb"):
            width += (dims["content_dim"] + 1) * (name in self.features)
        if "context" in self.features:
            self.dow = nn.Embedding(7, cfg.context_dim)
            self.hour = nn.Embedding(24, cfg.context_dim)
            width += 2 * cfg.context_dim
        width += dims.get("n_user_base", 0) * ("user_base" in self.features)
        width += dims.get("n_user_static", 0) * ("user_static" in self.features)
        sizes = dims.get("user_static_categories", []) if "user_static" in self.features else []
        # one small embedding per categorical static column (codes such as a range bucket, not quantities)
        self.static_categories = nn.ModuleList(nn.Embedding(size, cfg.context_dim) for size in sizes)
        width += len(sizes) * cfg.context_dim
        if "user_id" in self.features:
            self.user_id = nn.Embedding(dims["n_users"], cfg.id_dim)
            width += cfg.id_dim
        self.net = mlp(max(width, 1), cfg.hidden, cfg.output_dim, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        """-> user embedding [B, d]"""
        parts: list[Tensor] = []
        if "pos_mean_hist_emb" in self.features:
            parts += self.content.mean_of(batch["pos_hist"])
        if "neg_mean_hist_emb" in self.features:
            parts += self.content.mean_of(batch["neg_hist"])
        if "context" in self.features:
            parts += [self.dow(batch["dow"]), self.hour(batch["hour"])]
        if "user_base" in self.features:
            parts.append(batch["user_base"])
        if "user_static" in self.features:
            parts.append(batch["user_static"])
            parts += [emb(batch["user_static_cat"][:, j]) for j, emb in enumerate(self.static_categories)]
        if "user_id" in self.features:
            parts.append(self.user_id(batch["user_idx"]))
        return self.net(_concat(parts, batch))


class ItemTower(nn.Module):
    def __init__(self, cfg: ModelConfig, dims: dict[str, int], content: ContentTable | None):
        super().__init__()
        self.features = set(cfg.item_features)
        self.creator_id_embedding = cfg.creator_id_embedding
        self.content = content if "content" in self.features else None
        width = (dims["content_dim"] + 1) * ("content" in self.features)
        width += dims.get("n_item_base", 0) * ("item_base" in self.features)
        if "creator" in self.features:
            width += dims.get("n_creator", 0)
            if cfg.creator_id_embedding:
                self.creator_id = nn.Embedding(dims["n_creators"], cfg.id_dim)
                width += cfg.id_dim
        if "item_id" in self.features:
            self.item_id = nn.Embedding(dims["n_items"], cfg.id_dim)
            width += cfg.id_dim
        self.item_bias = cfg.item_bias
        # one extra output unit is the item bias
        self.net = mlp(max(width, 1), cfg.hidden, cfg.output_dim + int(cfg.item_bias), cfg.dropout)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """-> (item embedding [B, d], item bias [B]; zeros when ``item_bias`` is off)"""
        parts: list[Tensor] = []
        if "content" in self.features:
            rows = batch["content_row"]
            parts += [self.content.weight[rows], (rows == 0).float().unsqueeze(1)]
        if "item_base" in self.features:
            parts.append(batch["item_base"])
        if "creator" in self.features:
            parts.append(batch["creator"])
            if self.creator_id_embedding:
                parts.append(self.creator_id(batch["creator_idx"]))
        if "item_id" in self.features:
            parts.append(self.item_id(batch["item_idx"]))
        out = self.net(_concat(parts, batch))
        if self.item_bias:
            return out[:, :-1], out[:, -1]
        return out, out.new_zeros(out.shape[0])


def _concat(parts: list[Tensor], batch: Batch) -> Tensor:
    """Concatenate feature parts [B, *]; with every group switched off, a constant 1 input (a learned vector)."""
    if parts:
        return torch.cat(parts, dim=1)
    return torch.ones(len(batch["label"]), 1, device=batch["label"].device)


class TwoTower(nn.Module):
    """User and item towers meeting in a dot product; the item bias rides along as one extra dimension so that
    ``user_embeddings @ item_embeddings.T`` reproduces the logits exactly (inner-product ANN index)."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], content_table: Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        if content_table is None:  # rebuilt from a checkpoint: the state dict fills it in
            content_table = torch.zeros(dims["n_content"], max(dims["content_dim"], 1))
        content = ContentTable(content_table) if dims["content_dim"] > 0 else None
        self.user_tower = UserTower(cfg, dims, content)
        self.item_tower = ItemTower(cfg, dims, content)

    def user_embeddings(self, batch: Batch) -> Tensor:
        """-> [B, d + 1]: the user embedding (L2-normalised / temperature when ``normalize``) and a constant 1."""
        u = self.user_tower(batch)
        if self.cfg.normalize:
            u = F.normalize(u, dim=-1) / self.cfg.temperature
        return torch.cat([u, u.new_ones(u.shape[0], 1)], dim=1)

    def item_embeddings(self, batch: Batch) -> Tensor:
        """-> [B, d + 1]: the item embedding (L2-normalised when ``normalize``) and the item bias."""
        v, bias = self.item_tower(batch)
        if self.cfg.normalize:
            v = F.normalize(v, dim=-1)
        return torch.cat([v, bias.unsqueeze(1)], dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """-> logits [B] = <user, item> + item bias (the same arithmetic as the retrieval index)."""
        return (self.user_embeddings(batch) * self.item_embeddings(batch)).sum(dim=1)
