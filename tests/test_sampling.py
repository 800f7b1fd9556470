"""Positive:negative sampling: one hash for every engine, global and per-user modes, seeds."""

from __future__ import annotations

import ibis
import numpy as np
import pytest

from twotower.config import SamplingConfig
from twotower.data.engine import connect
from twotower.data.sampling import PRIME, row_hash, row_hash_py, sample_ratio, target_counts, threshold


def _rows(n_users: int = 300, seed: int = 0) -> ibis.Table:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rng.integers(2, 40, n_users))
    n = len(users)
    labels = (rng.random(n) < rng.uniform(0.05, 0.6, n_users)[users]).astype(np.int8)
    return ibis.memtable(
        {
            "user_id": users.astype(np.int64),
            "item_id": rng.integers(0, 10**6, n),
            "ts_ms": 1_651_363_200_000 + rng.integers(0, 10**9, n),
            "label": labels,
        }
    )


def test_engine_hash_equals_the_python_reference():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2**62, (3, 2000))
    table = ibis.memtable({"user_id": ids[0], "item_id": ids[1], "ts_ms": ids[2]})
    got = connect().execute(table.mutate(h=row_hash(table, 2**32 - 1)))["h"].to_numpy()
    expected = [row_hash_py(int(u), int(i), int(t), 2**32 - 1) for u, i, t in ids.T]
    np.testing.assert_array_equal(got, expected)
    # roughly uniform over [0, PRIME): each tenth holds 10% +- 2%
    counts = np.histogram(got / PRIME, bins=10, range=(0, 1))[0]
    assert (np.abs(counts / len(got) - 0.1) < 0.02).all()


def test_hash_by_hand():
    # seed 0, user 1, item 2, ts 3: h = ((0*m1 + 1)*m2 + 2)*m3 + 3 (mod P), then two final rounds
    h = ((1 * 1_103_515_245 + 2) * 2_147_483_629 + 3) % PRIME
    h = (h * 1_597_334_677 + 1_013_904_223) % PRIME
    h = (h * 2_146_121_005 + 907_633_385) % PRIME
    assert row_hash_py(1, 2, 3, 0) == h


def test_thresholds():
    assert threshold(5, 5) == PRIME and threshold(7, 5) == PRIME  # keep everything
    assert threshold(1, 4) == PRIME // 4 and threshold(0, 9) == 0
    assert target_counts(30, 100, SamplingConfig()) == (30, 30)
    assert target_counts(60, 20, SamplingConfig(positive=7, negative=3)) == (47, 20)


def test_global_mode_keeps_about_the_ratio_and_every_scarce_row():
    rows = _rows()
    con = connect()
    before = con.execute(rows)
    kept = con.execute(sample_ratio(rows, SamplingConfig(), seed=3))
    n_pos, n_neg = int(before.label.sum()), int((before.label == 0).sum())
    assert n_pos < n_neg and int(kept.label.sum()) == n_pos  # the scarcer label is kept whole
    assert abs(int((kept.label == 0).sum()) - n_pos) < 4 * np.sqrt(n_pos)  # binomial: mean n_pos


def test_per_user_mode_balances_each_user():
    rows = _rows()
    con = connect()
    before = con.execute(rows).groupby("user_id").label.agg(["sum", "size"])
    kept = con.execute(sample_ratio(rows, SamplingConfig(mode="per_user"), seed=3)).groupby("user_id").label.agg(["sum", "size"])
    one_label = (before["sum"] == 0) | (before["sum"] == before["size"])
    assert (kept.loc[one_label[one_label].index, "size"] == before.loc[one_label, "size"]).all()
    both = before[~one_label].index
    pos, neg = kept.loc[both, "sum"], kept.loc[both, "size"] - kept.loc[both, "sum"]
    scarce = np.minimum(before.loc[both, "sum"], before.loc[both, "size"] - before.loc[both, "sum"])
    assert (np.minimum(pos, neg) <= scarce).all() and ((pos == scarce) | (neg == scarce)).all()
    # over all users the kept positive share is close to one half, unlike the raw rows
    assert abs(pos.sum() / (pos.sum() + neg.sum()) - 0.5) < 0.05


@pytest.mark.parametrize("mode", ["global", "per_user"])
def test_same_seed_same_sample_other_seed_other_sample(mode):
    rows, con = _rows(), connect()
    key = ["user_id", "item_id", "ts_ms"]

    def sample(seed):
        frame = con.execute(sample_ratio(rows, SamplingConfig(mode=mode), seed=seed))
        return set(map(tuple, frame[key].to_numpy()))

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)
