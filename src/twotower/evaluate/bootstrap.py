"""Paired bootstrap over users: how sure is a difference of a per-user metric's mean between two runs?

Input: for each experiment e, the per-user differences ``d_e`` (n_e,) = value in run B − value in run A on
the users both runs evaluated (paired: the same user, the same list). The statistic is the mean over
experiments of the per-experiment mean difference, ``mean_e mean(d_e)``: each experiment counts once,
whatever its number of users, as the sheet averages its experiments. One bootstrap resample draws n_e
users with replacement within each experiment (users are the sampling unit; experiments are fixed
strata) and recomputes the statistic. The interval is the percentile interval of the resampled
statistics (``confidence`` = 0.95: the 2.5th and 97.5th percentiles).

Vectorised: the resample indices of a chunk of resamples are drawn as one (chunk, n_e) integer array and
gathered at once; chunks bound memory to about ``CHUNK_ELEMENTS`` values whatever the number of users.
Seeded (``numpy.random.default_rng(seed)``): the same inputs give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: resampled values held at once per chunk (4M float64 = 32 MiB)
CHUNK_ELEMENTS = 1 << 22
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A difference (B − A) with its bootstrap percentile interval [low, high] and the users behind it."""

    estimate: float
    low: float
    high: float
    n_users: tuple[int, ...]  # paired users per experiment
    resamples: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (the difference is "significant")."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "excludes_zero": self.excludes_zero,
            "n_users": list(self.n_users),
            "resamples": self.resamples,
            "confidence": self.confidence,
        }


def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of ``values`` (n,) over ``resamples`` bootstrap resamples of its n entries -> (resamples,)."""
    n = len(values)
    out = np.empty(resamples, dtype=np.float64)
    chunk = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def paired_bootstrap(
    differences: Sequence[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """The mean over experiments of the mean per-user difference, with its paired-bootstrap interval.

    ``differences``: one array (n_e,) of per-user differences (B − A) per experiment; every entry finite
    and every experiment with at least one user (``ValueError`` otherwise).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    arrays = [np.asarray(d, dtype=np.float64) for d in differences]
    if not arrays:
        raise ValueError("paired_bootstrap needs at least one experiment")
    for i, d in enumerate(arrays):
        if d.ndim != 1 or len(d) == 0:
            raise ValueError(f"experiment {i}: expected a non-empty one-dimensional array of differences")
        if not np.isfinite(d).all():
            raise ValueError(f"experiment {i}: differences must be finite (pair only users both runs evaluated)")
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples, dtype=np.float64)
    for d in arrays:
        stats += resampled_means(d, resamples, rng)
    stats /= len(arrays)
    estimate = float(np.mean([d.mean() for d in arrays]))
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), tuple(len(d) for d in arrays), resamples, confidence)
