"""Sample weights and positive:negative sampling of the training examples."""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from twotower.config import SampleWeightConfig, SamplingConfig

# The series' event weights (design.md) for positives (negatives weigh 1.0).
EVENT_WEIGHTS = {"watched": 1.2, "liked": 1.5, "shared": 2.0, "any two": 2.5, "all three": 3.0}


def sample_weight(rows: ir.Table, cfg: SampleWeightConfig, watched: ir.BooleanValue) -> ir.FloatingValue:
    """Per-row weight: ``none`` 1.0; ``sqrt_watch_seconds`` positives min(sqrt(s), cap); ``events``."""
    if cfg.mode == "none":
        return ibis.literal(1.0)
    if cfg.mode == "sqrt_watch_seconds":
        positive = ibis.least((rows.watch_ms / 1000.0).sqrt(), cfg.cap)
        return ibis.ifelse(rows.label == 1, positive, 1.0)
    liked, shared = rows.like > 0, rows.share > 0
    n = watched.cast("int8") + liked.cast("int8") + shared.cast("int8")
    positive = ibis.cases(
        (n == 3, EVENT_WEIGHTS["all three"]),
        (n == 2, EVENT_WEIGHTS["any two"]),
        (shared, EVENT_WEIGHTS["shared"]),
        (liked, EVENT_WEIGHTS["liked"]),
        else_=EVENT_WEIGHTS["watched"],
    )
    return ibis.ifelse(rows.label == 1, ibis.least(positive, cfg.cap), 1.0)


def target_counts(positives: int, negatives: int, cfg: SamplingConfig) -> tuple[int, int]:
    """How many positives and negatives to keep for the ratio positive:negative, keeping the scarcer all."""
    if positives * cfg.negative >= negatives * cfg.positive:
        return min(positives, round(negatives * cfg.positive / cfg.negative)), negatives
    return positives, min(negatives, round(positives * cfg.negative / cfg.positive))


def sample_ratio(rows: ir.Table, cfg: SamplingConfig, seed: int) -> ir.Table:
    """Keep exactly ``target_counts`` rows of each label, chosen by a seeded hash of the row's key."""
    counts = rows.group_by("label").aggregate(n=rows.count()).to_pyarrow().to_pydict()
    by_label = dict(zip(counts["label"], counts["n"], strict=True))
    keep_pos, keep_neg = target_counts(by_label.get(1, 0), by_label.get(0, 0), cfg)
    key = ibis.literal(f"{seed}:") + rows.user_id.cast("string") + ":" + rows.item_id.cast("string") + ":" + rows.ts_ms.cast("string")
    rank = ibis.row_number().over(group_by=rows.label, order_by=[key.hash(), rows.ts_ms, rows.user_id, rows.item_id])
    ranked = rows.mutate(sample_rank=rank)
    keep = ibis.ifelse(ranked.label == 1, ranked.sample_rank < keep_pos, ranked.sample_rank < keep_neg)
    return ranked.filter(keep).drop("sample_rank")
