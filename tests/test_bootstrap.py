"""The paired bootstrap: its estimate by hand, its coverage on synthetic paired scores, the zero cases.

Coverage bounds: over R = 400 independent repetitions the number of intervals that cover the truth is
Binomial(400, p) with p ~ 0.95 for a correct 95% interval, so the observed share has a standard deviation
of sqrt(0.95 * 0.05 / 400) = 0.011. [0.92, 0.98] is 0.95 +- 2.75 sd: a correct interval lands outside it
with probability about 0.6%, while an interval that is too narrow by a quarter (true coverage ~ 0.86) or
one that ignores the pairing (coverage ~ 1.0 here, see the last test) lands outside it almost surely. The
repetitions are seeded, so the test is deterministic; the bound says why the fixed seed is not cherry-picked.
"""

from __future__ import annotations

import numpy as np
import pytest

from twotower.evaluate.bootstrap import paired_bootstrap, resampled_means

REPETITIONS = 400
LOW, HIGH = 0.92, 0.98


def _skewed_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Mean-zero noise with a long right tail (per-user metric differences are rarely symmetric)."""
    return scale * (rng.exponential(1.0, n) - 1.0) + rng.normal(0.0, scale / 2, n)


def test_estimate_is_the_mean_over_experiments_of_each_experiments_mean():
    result = paired_bootstrap([np.array([1.0, 2.0, 3.0]), np.array([10.0])], resamples=50)
    assert result.estimate == pytest.approx(6.0)  # (2 + 10) / 2, not the pooled mean 4
    assert result.n_users == (3, 1)
    # the single-user experiment always resamples to 10; the other to a mean in [1, 3]
    assert 5.5 <= result.low <= result.high <= 6.5


def test_identical_runs_give_exactly_zero():
    zeros = [np.zeros(37), np.zeros(5)]
    result = paired_bootstrap(zeros, resamples=1000)
    assert (result.estimate, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero


def test_seeded_and_chunked_resampling_agree(monkeypatch):
    rng = np.random.default_rng(1)
    d = [rng.normal(0.01, 0.1, 300), rng.normal(0.02, 0.1, 200)]
    a = paired_bootstrap(d, resamples=1000, seed=3)
    assert paired_bootstrap(d, resamples=1000, seed=3) == a
    assert paired_bootstrap(d, resamples=1000, seed=4) != a
    # resampled means do not depend on how the resamples are split into chunks
    values = rng.normal(size=50)
    whole = resampled_means(values, 64, np.random.default_rng(9))
    monkeypatch.setattr("twotower.evaluate.bootstrap.CHUNK_ELEMENTS", 50 * 7)  # chunks of 7 resamples
    chunked = resampled_means(values, 64, np.random.default_rng(9))
    assert chunked.shape == (64,)
    # same distribution (mean of resampled means ~ the sample mean), not the same draws
    assert abs(chunked.mean() - values.mean()) < 4 * values.std() / np.sqrt(50 * 64)
    assert abs(whole.mean() - values.mean()) < 4 * values.std() / np.sqrt(50 * 64)


def test_interval_width_matches_the_normal_approximation_for_many_users():
    rng = np.random.default_rng(5)
    d = [rng.normal(0.02, 0.2, 4000), rng.normal(0.0, 0.1, 2000)]
    result = paired_bootstrap(d, resamples=4000, seed=0)
    se = np.sqrt(d[0].var() / 4000 + d[1].var() / 2000) / 2  # variance of the mean of two means
    assert result.high - result.low == pytest.approx(2 * 1.959964 * se, rel=0.06)
    assert result.estimate == pytest.approx((d[0].mean() + d[1].mean()) / 2)
    assert result.excludes_zero  # 0.01 with se ~ 0.0017


def test_coverage_of_a_known_true_difference():
    """Two experiments (150 and 250 users) whose true mean differences are 0.01 and 0.03: the statistic's
    true value is 0.02; paired scores share a per-user level that the pairing cancels."""
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(REPETITIONS):
        diffs = []
        for n, delta in ((150, 0.01), (250, 0.03)):
            level = rng.beta(2, 2, n)  # each user's own difficulty, common to both runs
            a = level + _skewed_noise(rng, n, 0.05)
            b = level + delta + _skewed_noise(rng, n, 0.05)
            diffs.append(b - a)
        result = paired_bootstrap(diffs, resamples=1000, seed=int(rng.integers(1 << 31)))
        covered += result.low <= 0.02 <= result.high
    assert LOW <= covered / REPETITIONS <= HIGH, covered / REPETITIONS


def test_coverage_of_zero_with_independent_noise():
    """Two runs with the same expected per-user value and independent noise: the truth is 0."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(REPETITIONS):
        diffs = [rng.beta(2, 5, n) - rng.beta(2, 5, n) for n in (120, 300)]
        result = paired_bootstrap(diffs, resamples=1000, seed=int(rng.integers(1 << 31)))
        covered += result.low <= 0.0 <= result.high
    assert LOW <= covered / REPETITIONS <= HIGH, covered / REPETITIONS


def test_pairing_narrows_the_interval():
    """With a large per-user level shared by both runs, the paired interval is far narrower than the spread
    of either run's values: resampling the differences, not the runs separately, is what pairing means."""
    rng = np.random.default_rng(11)
    level = rng.beta(0.5, 0.5, 500)
    a, b = level + rng.normal(0, 0.01, 500), level + 0.005 + rng.normal(0, 0.01, 500)
    result = paired_bootstrap([b - a], resamples=2000)
    assert result.excludes_zero and result.low > 0
    assert result.high - result.low < 0.1 * 2 * 1.96 * a.std() / np.sqrt(500)


@pytest.mark.parametrize(
    ("differences", "message"),
    [([], "at least one experiment"), ([np.array([])], "non-empty"), ([np.array([0.1, np.nan])], "finite")],
)
def test_bad_input_is_a_one_line_error(differences, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(differences)
