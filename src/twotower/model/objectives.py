"""Training objectives on top of the shared towers: only the loss and the negatives differ.

``bce``      the sheet's task: weighted binary cross-entropy on the logits of played rows (completed vs not).
``softmax``  the retrieval task: every positive row against the batch's other positives (in-batch negatives)
             and N items drawn uniformly from the batch day's catalog (mixed negative sampling, Yang et al.
             2020), a softmax over those candidates with the target on the diagonal. With the log-frequency
             correction (sampling-bias-corrected softmax, Yi et al. 2019) each candidate's logit loses
             log q(i), q(i) = B * p_day(i) + N / |C_day| -- the expected number of times item i is among a
             batch's candidates when the B positives are drawn from that day's positives (item i's share
             p_day(i)) and the N negatives uniformly from its catalog C_day. Without it, in-batch negatives
             punish popular items for being sampled often and the model learns anti-popularity.

Shapes: B = rows (positives) of the batch, N = catalog negatives, C = B + N candidates, D = the model's
embedding width (``output_dim + 1``: the item bias rides along as the last column).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from twotower.model.two_tower import Batch, TwoTower


def weighted_bce(logits: Tensor, label: Tensor, weight: Tensor) -> Tensor:
    """logits, label, weight [B] -> scalar: BCE with logits weighted by ``weight``, over the total weight."""
    return bce_terms(logits, label, weight).sum() / weight.sum().clamp_min(1e-12)


def bce_terms(logits: Tensor, label: Tensor, weight: Tensor) -> Tensor:
    """``weighted_bce`` before the sum: each row's weighted BCE [B]."""
    return F.binary_cross_entropy_with_logits(logits, label, reduction="none") * weight


def bce_loss(model: TwoTower, batch: Batch) -> Tensor:
    """The sheet's loss of a batch of played rows: ``weighted_bce`` of the model's logits [B]."""
    return weighted_bce(model(batch), batch["label"], batch["weight"])


def log_q(p_day: Tensor, n_rows: int, n_negatives: int, n_catalog: int) -> Tensor:
    """p_day [C] (each candidate's share of its day's positives) -> log q [C], q = B * p_day + N / |C_day|.

    Every candidate has q > 0: a catalog negative is drawable (N / |C_day| > 0), and an in-batch candidate
    is a positive of that day (p_day > 0)."""
    uniform = n_negatives / n_catalog if n_negatives else 0.0
    return torch.log(n_rows * p_day + uniform)


def accidental_hits(users: Tensor, items: Tensor, candidates: Tensor) -> Tensor:
    """users, items [B] (each row's user and positive item, raw ids), candidates [C] (raw item ids; the first
    B are ``items`` in order) -> bool mask [B, C]: candidate j is an item that row i's user has as a positive
    in this batch (row i's own item included), except j == i, the row's own target. A masked candidate is
    no negative for that row: it would push away an item the user did complete."""
    # Row k's (user, item) pair as one integer key; candidate j hits row i when (user i, candidate j) is a key.
    _, user_code = torch.unique(users, return_inverse=True)  # [B]
    _, item_code = torch.unique(torch.cat([items, candidates]), return_inverse=True)  # [B + C]
    n_items = int(item_code.max()) + 1 if len(item_code) else 1
    keys = user_code * n_items + item_code[: len(items)]  # [B]
    pairs = user_code[:, None] * n_items + item_code[None, len(items) :]  # [B, C]
    mask = torch.isin(pairs, keys)
    mask[torch.arange(len(items)), torch.arange(len(items))] = False
    return mask


def sampled_softmax(
    user: Tensor, items: Tensor, weight: Tensor, mask: Tensor | None = None, correction: Tensor | None = None
) -> Tensor:
    """user [B, D], items [C, D] (candidates; candidate i < B is row i's positive), weight [B], mask [B, C]
    (True = left out), correction [C] (log q, subtracted) -> scalar: weighted mean cross-entropy of the
    diagonal target over each row's candidates."""
    return sampled_softmax_terms(user, items, weight, mask, correction).sum() / weight.sum().clamp_min(1e-12)


def sampled_softmax_terms(
    user: Tensor,
    items: Tensor,
    weight: Tensor,
    mask: Tensor | None = None,
    correction: Tensor | None = None,
    first: int = 0,
) -> Tensor:
    """``sampled_softmax`` before the sum: each row's weighted cross-entropy [P] for P = len(user) rows whose
    targets are candidates ``first .. first + P - 1`` (``first`` > 0: one part of a batch split over
    processes, each scoring its rows against every candidate)."""
    logits = user @ items.T  # [P, C]
    if correction is not None:
        logits = logits - correction[None, :]
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(first, first + len(user), device=user.device)
    return F.cross_entropy(logits, target, reduction="none") * weight


def softmax_loss(
    model: TwoTower,
    rows: Batch,
    negatives: Batch | None,
    n_catalog: int,
    logq_correction: bool = True,
) -> Tensor:
    """The retrieval loss of one within-day batch.

    ``rows``: B positive rows (both towers' inputs) with ``user_key``, ``item_key`` (raw ids) and ``p_day``
    [B]; ``negatives``: N catalog rows of the same day (item tower inputs, ``item_key``, ``p_day``) or None;
    ``n_catalog``: |C_day|."""
    terms = softmax_terms(model, rows, negatives, n_catalog, logq_correction)
    return terms.sum() / rows["weight"].sum().clamp_min(1e-12)


def softmax_terms(
    model: TwoTower,
    rows: Batch,
    negatives: Batch | None,
    n_catalog: int,
    logq_correction: bool = True,
    part: tuple[int, int] | None = None,
) -> Tensor:
    """``softmax_loss`` before the sum: the weighted cross-entropy of each row [B], or of rows
    ``part = (start, stop)`` only [stop - start] (their user tower alone runs; every row's item is still a
    candidate, so the part's terms are those of the whole batch)."""
    start, stop = part if part is not None else (0, len(rows["item_key"]))
    mine = rows if part is None else {k: v[start:stop] for k, v in rows.items()}
    user = model.user_embeddings(mine)  # [P, D]
    items, keys, share = model.item_embeddings(rows), rows["item_key"], rows["p_day"]
    n_negatives = 0
    if negatives is not None and len(negatives["item_key"]):
        n_negatives = len(negatives["item_key"])
        items = torch.cat([items, model.item_embeddings(negatives)])  # [C, D]
        keys = torch.cat([keys, negatives["item_key"]])
        share = torch.cat([share, negatives["p_day"]])
    correction = log_q(share, len(rows["item_key"]), n_negatives, n_catalog) if logq_correction else None
    mask = accidental_hits(rows["user_key"], rows["item_key"], keys)[start:stop]
    return sampled_softmax_terms(user, items, mine["weight"], mask, correction, first=start)
