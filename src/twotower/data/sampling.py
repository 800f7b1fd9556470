"""Sample weights and positive:negative sampling of the training examples.

Sampling keeps each row with a probability set per label (``global``: the same for every user, so that the
kept rows are about ``positive:negative`` overall; ``per_user``: per user, so that each user's rows are),
decided by comparing a hash of the row with an integer threshold. The hash is this project's own
arithmetic on the row's (user id, item id, time, seed) — additions, multiplications and remainders of
non-negative integers below 2**62 — which every engine evaluates identically, so DuckDB and Spark keep
exactly the same rows. No window function and no sort: each row is decided on its own, in parallel.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from twotower.config import SampleWeightConfig, SamplingConfig
from twotower.data.validate import float64

# The series' event weights for positives (negatives weigh 1.0).
EVENT_WEIGHTS = {"watched": 1.2, "liked": 1.5, "shared": 2.0, "any two": 2.5, "all three": 3.0}

PRIME = 2_147_483_647  # 2**31 - 1: every product below stays under 2**62 (no int64 overflow on any engine)
MULTIPLIERS = (1_597_334_677, 1_103_515_245, 2_147_483_629, 1_664_525_113)
FINAL = ((1_597_334_677, 1_013_904_223), (2_146_121_005, 907_633_385))


def row_hash_py(user_id: int, item_id: int, ts_ms: int, seed: int) -> int:
    """The row hash in plain Python (the reference the engines must equal): an integer in [0, PRIME)."""
    h = seed % PRIME
    for value, multiplier in zip((user_id, item_id, ts_ms), MULTIPLIERS, strict=False):
        h = (h * multiplier + value % PRIME) % PRIME
    for multiplier, increment in FINAL:
        h = (h * multiplier + increment) % PRIME
    return h


def row_hash(rows: ir.Table, seed: int) -> ir.IntegerValue:
    """``row_hash_py`` as an Ibis expression over non-negative ``user_id``, ``item_id``, ``ts_ms``."""
    h = ibis.literal(seed % PRIME).cast("int64")  # a typed start: SQL would read the literals as 32-bit
    for value, multiplier in zip((rows.user_id, rows.item_id, rows.ts_ms), MULTIPLIERS, strict=False):
        h = (h * ibis.literal(multiplier, type="int64") + value.cast("int64") % PRIME) % PRIME
    for multiplier, increment in FINAL:
        h = (h * ibis.literal(multiplier, type="int64") + ibis.literal(increment, type="int64")) % PRIME
    return h


def sample_weight(rows: ir.Table, cfg: SampleWeightConfig, watched: ir.BooleanValue) -> ir.FloatingValue:
    """Per-row weight: ``none`` 1.0; ``sqrt_watch_seconds`` positives min(sqrt(s), cap); ``events``.

    Literals are DOUBLE on every engine (``validate.float64``): Spark would read a bare 1.0 as a decimal."""
    if cfg.mode == "none":
        return float64(1.0)
    if cfg.mode == "sqrt_watch_seconds":
        positive = ibis.least((rows.watch_ms / 1000.0).sqrt(), float64(cfg.cap))
        return ibis.ifelse(rows.label == 1, positive, float64(1.0))
    liked, shared = rows.like > 0, rows.share > 0
    n = watched.cast("int8") + liked.cast("int8") + shared.cast("int8")
    positive = ibis.cases(
        (n == 3, float64(EVENT_WEIGHTS["all three"])),
        (n == 2, float64(EVENT_WEIGHTS["any two"])),
        (shared, float64(EVENT_WEIGHTS["shared"])),
        (liked, float64(EVENT_WEIGHTS["liked"])),
        else_=float64(EVENT_WEIGHTS["watched"]),
    )
    return ibis.ifelse(rows.label == 1, ibis.least(positive, float64(cfg.cap)), float64(1.0))


def target_counts(positives: int, negatives: int, cfg: SamplingConfig) -> tuple[int, int]:
    """How many positives and negatives to keep for the ratio positive:negative, keeping the scarcer all."""
    if positives * cfg.negative >= negatives * cfg.positive:
        return min(positives, round(negatives * cfg.positive / cfg.negative)), negatives
    return positives, min(negatives, round(positives * cfg.negative / cfg.positive))


def threshold(keep: int, total: int) -> int:
    """The hash threshold that keeps about ``keep`` of ``total`` rows (all of them when keep >= total)."""
    return PRIME if keep >= total else (keep * PRIME) // max(total, 1)


def sample_ratio(rows: ir.Table, cfg: SamplingConfig, seed: int) -> ir.Table:
    """Keep each row when its hash is below its label's threshold (``cfg.mode``: global or per user)."""
    h = row_hash(rows, seed)
    if cfg.mode == "global":
        counts = rows.group_by("label").aggregate(n=rows.count()).to_pyarrow().to_pydict()
        by_label = dict(zip(counts["label"], counts["n"], strict=True))
        keep_pos, keep_neg = target_counts(by_label.get(1, 0), by_label.get(0, 0), cfg)
        limit = ibis.ifelse(rows.label == 1, threshold(keep_pos, by_label.get(1, 0)), threshold(keep_neg, by_label.get(0, 0)))
        return rows.filter(h < limit)
    per_user = rows.group_by("user_id").aggregate(n_pos=rows.label.cast("int64").sum(), n=rows.count())
    per_user = per_user.mutate(n_neg=per_user.n - per_user.n_pos)
    pos, neg = per_user.n_pos, per_user.n_neg
    # the scarcer label is kept whole; the other is cut to the ratio (rounded half up); a user with one
    # label only has nothing to balance and keeps every row
    more_pos = pos * cfg.negative >= neg * cfg.positive
    keep_pos = ibis.ifelse(more_pos, ibis.least(pos, (neg * (2 * cfg.positive) + cfg.negative) // (2 * cfg.negative)), pos)
    keep_neg = ibis.ifelse(more_pos, neg, ibis.least(neg, (pos * (2 * cfg.negative) + cfg.positive) // (2 * cfg.positive)))
    one_label = (pos == 0) | (neg == 0)
    limits = per_user.select(
        "user_id",
        pos_limit=ibis.ifelse(one_label | (keep_pos >= pos), PRIME, (keep_pos * PRIME) // ibis.greatest(pos, 1)),
        neg_limit=ibis.ifelse(one_label | (keep_neg >= neg), PRIME, (keep_neg * PRIME) // ibis.greatest(neg, 1)),
    )
    joined = rows.mutate(sample_hash=h).join(limits, "user_id")
    keep = joined.sample_hash < ibis.ifelse(joined.label == 1, joined.pos_limit, joined.neg_limit)
    return joined.filter(keep).drop("sample_hash", "pos_limit", "neg_limit")
