"""The validation day's evaluation set ("played re-ranking", docs/metrics.md).

One row per (user, item) played that day; the label is 1 if any play met the positive criterion; the
context (day of week, hour) is that of the first play. Users need at least one positive and one negative
row; the others are counted by reason.
"""

from __future__ import annotations

import ibis.expr.types as ir


def played_rows(val: ir.Table) -> ir.Table:
    """One row per (user, item) of the validation day's plays."""
    return val.group_by(["user_id", "item_id", "creator_id", "day_n"]).aggregate(
        label=val.label.max(),
        ts_ms=val.ts_ms.min(),
        dow=val.dow.argmin(val.ts_ms),
        hour=val.hour.argmin(val.ts_ms),
        duration_ms=val.duration_ms.argmin(val.ts_ms),
    )


def evaluable(rows: ir.Table) -> tuple[ir.Table, dict[str, int]]:
    """Rows of users with both labels, and how many users were left out and why."""
    per_user = rows.group_by("user_id").aggregate(n=rows.count(), positives=rows.label.sum())
    reasons = per_user.aggregate(
        all_positive=(per_user.positives == per_user.n).sum(),
        all_negative=(per_user.positives == 0).sum(),
    ).to_pyarrow().to_pylist()[0]
    kept = per_user.filter((per_user.positives > 0) & (per_user.positives < per_user.n)).select("user_id")
    left_out = {"users without a negative row": int(reasons["all_positive"] or 0), "users without a positive row": int(reasons["all_negative"] or 0)}
    return rows.semi_join(kept, "user_id"), left_out
