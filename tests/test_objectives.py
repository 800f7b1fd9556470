"""The retrieval objective's arithmetic on a batch small enough to work out by hand, and its batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twotower.model.batching import DayBatchSampler, positive_shares, share_of
from twotower.model.objectives import accidental_hits, log_q, softmax_loss

# Three positive rows (B = 3): rows 0 and 1 are one user's (7), row 2 another's (8); rows 0 and 2 share item 100.
# Two catalog negatives (N = 2): items 101 and 102. Candidates, in order: 100, 101, 100 | 101, 102.
USERS = torch.tensor([7, 7, 8])
ITEMS = torch.tensor([100, 101, 100])
NEGATIVES = torch.tensor([101, 102])
U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # user embeddings [B, D]
V = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]])  # the rows' positive items [B, D]
V_NEG = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # the negatives [N, D] (item 101 as in row 1)
# logits u_i . v_j:  row 0: 2, 0, 1, 0, 1   row 1: 0, 1, -1, 1, 1   row 2: 2, 1, 0, 1, 2
P_DAY = {100: 0.5, 101: 0.25, 102: 0.0}  # each item's share of the day's positives
N_CATALOG = 4


class FixedTowers:
    """Stands in for ``TwoTower``: the embeddings are given in the batch."""

    def user_embeddings(self, batch):
        return batch["u"]

    def item_embeddings(self, batch):
        return batch["v"]


def _batches():
    rows = {
        "u": U,
        "v": V,
        "user_key": USERS,
        "item_key": ITEMS,
        "p_day": torch.tensor([P_DAY[int(i)] for i in ITEMS]),
        "weight": torch.ones(3),
    }
    negatives = {"v": V_NEG, "item_key": NEGATIVES, "p_day": torch.tensor([P_DAY[int(i)] for i in NEGATIVES])}
    return rows, negatives


def test_accidental_hits_mask_the_users_other_positives_and_the_positive_elsewhere():
    mask = accidental_hits(USERS, ITEMS, torch.cat([ITEMS, NEGATIVES]))
    expected = torch.tensor(
        [
            # row 0 (user 7, positives 100 and 101): its own 100 (col 0) is the target; 101 and the other 100 are hits
            [False, True, True, True, False],
            # row 1 (user 7): target 101 (col 1); 100 twice and the negative 101 are hits
            [True, False, True, True, False],
            # row 2 (user 8, positive 100): the other row's 100 is the same item; 101 is a fair negative
            [True, False, False, False, False],
        ]
    )
    assert torch.equal(mask, expected)


def test_log_q_of_the_mixed_sampler():
    # q = B * p_day + N / |C| = 3 p + 0.5
    got = log_q(torch.tensor([0.5, 0.25, 0.0]), n_rows=3, n_negatives=2, n_catalog=4)
    assert torch.allclose(got, torch.tensor([math.log(2.0), math.log(1.25), math.log(0.5)]))
    # in-batch only: q = B * p_day
    assert torch.allclose(log_q(torch.tensor([0.5]), 3, 0, 4), torch.tensor([math.log(1.5)]))


def test_softmax_loss_without_correction_by_hand():
    rows, negatives = _batches()
    loss = softmax_loss(FixedTowers(), rows, negatives, N_CATALOG, logq_correction=False)
    # row 0 keeps candidates 0 (logit 2, target) and 4 (logit 1): log(e^2 + e^1) - 2
    row0 = math.log(1 + math.exp(-1))
    # row 1 keeps 1 (logit 1, target) and 4 (logit 1)
    row1 = math.log(2)
    # row 2 keeps 1 (1), 2 (0, target), 3 (1), 4 (2)
    row2 = math.log(2 * math.e + 1 + math.e**2)
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


def test_softmax_loss_with_the_logq_correction_by_hand():
    rows, negatives = _batches()
    loss = softmax_loss(FixedTowers(), rows, negatives, N_CATALOG, logq_correction=True)
    # logits minus log q: item 100 - log 2, item 101 - log 1.25, item 102 - log 0.5
    row0 = math.log(1 + math.exp((1 + math.log(2)) - (2 - math.log(2))))  # = log(1 + 4 / e)
    row1 = math.log(1 + math.exp((1 + math.log(2)) - (1 - math.log(1.25))))  # = log(3.5)
    row2 = math.log(1 + 3.2 * math.e + 4 * math.e**2)  # every kept logit relative to the target's (-log 2)
    assert row0 == pytest.approx(math.log(1 + 4 / math.e)) and row1 == pytest.approx(math.log(3.5))
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


def test_softmax_loss_weights_rows_and_runs_without_negatives():
    rows, negatives = _batches()
    rows["weight"] = torch.tensor([1.0, 0.0, 3.0])
    weighted = softmax_loss(FixedTowers(), rows, negatives, N_CATALOG, logq_correction=False)
    row0, row2 = math.log(1 + math.exp(-1)), math.log(2 * math.e + 1 + math.e**2)
    assert weighted.item() == pytest.approx((row0 + 3 * row2) / 4, rel=1e-6)
    # in-batch only: row 0 keeps only its target (loss 0); row 1 too; row 2 keeps 1 (logit 1) and 2 (0)
    rows["weight"] = torch.ones(3)
    alone = softmax_loss(FixedTowers(), rows, None, N_CATALOG, logq_correction=False)
    assert alone.item() == pytest.approx(math.log(1 + math.e) / 3, rel=1e-6)


def test_positive_shares_per_day():
    days = np.array([1, 1, 1, 1, 2, 2])
    items = np.array([100, 100, 101, 102, 100, 103])
    shares = positive_shares(days, items)
    assert shares[(1, 100)] == 0.5 and shares[(1, 101)] == 0.25 and shares[(2, 103)] == 0.5
    got = share_of(shares, np.array([1, 2, 2]), np.array([101, 101, 100]))
    assert got.tolist() == [0.25, 0.0, 0.5]


def test_day_batches_stay_within_a_day_cover_every_row_and_follow_the_generator():
    days = np.repeat([5, 6, 7], [7, 3, 10])
    sampler = DayBatchSampler(days, 4, torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 1 + 3
    assert all(len(set(days[b.numpy()])) == 1 and len(b) <= 4 for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(days)))
    again = list(DayBatchSampler(days, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(DayBatchSampler(days, 4, torch.Generator().manual_seed(1)))
    assert any(not torch.equal(a, b) for a, b in zip(batches, other, strict=False))
    # the second epoch of one sampler differs from its first (the generator moves on)
    assert any(not torch.equal(a, b) for a, b in zip(batches, list(sampler), strict=False))


def test_share_of_unknown_pairs_is_zero():
    shares = positive_shares(np.array([1]), np.array([9]))
    assert share_of(shares, np.array([1, 2]), np.array([8, 9])).tolist() == [0.0, 0.0]
