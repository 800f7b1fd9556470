"""History snapshots: per (user, day d), the last positive and negative items as of the start of d.

Only events of days [d - lookback, d - 1] are read, so a snapshot never sees day d (the example's own row
and anything later). Positive: a play with label 1. Negative: a play with label 0 *and* a watch time below
the item's mean watch time over all users' plays in the same past days. Each item appears once per list
(its most recent qualifying play); lists are most recent first and capped at ``max_items``.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir


def history_snapshots(
    events: ir.Table, needed: ir.Table, item_watch: ir.Table, lookback: int, max_items: int
) -> ir.Table:
    """Snapshots for every (user_id, day_n) in ``needed``.

    ``item_watch``: (item_id, day_n, item_mean_watch_s) as of each needed day (over the same past days).
    Returns user_id, day_n, pos_items array<int64>, neg_items array<int64> (most recent first).
    """
    past = events.select("user_id", "item_id", "ts_ms", "label", "watch_ms", past_day=events.day_n)
    candidates = needed.join(
        past,
        [
            needed.user_id == past.user_id,
            past.past_day >= needed.day_n - lookback,
            past.past_day < needed.day_n,
        ],
    ).drop("user_id_right")
    candidates = candidates.join(item_watch, ["item_id", "day_n"])
    is_negative = (candidates.label == 0) & (candidates.watch_ms < candidates.item_mean_watch_s * 1000.0)
    kind = ibis.cases((candidates.label == 1, "pos"), (is_negative, "neg"), else_=ibis.null("string"))
    qualifying = candidates.mutate(kind=kind).filter(ibis._.kind.notnull())
    latest = qualifying.group_by(["user_id", "day_n", "kind", "item_id"]).aggregate(ts_ms=qualifying.ts_ms.max())
    order = [ibis.desc(latest.ts_ms), ibis.desc(latest.item_id)]
    rank = ibis.row_number().over(group_by=[latest.user_id, latest.day_n, latest.kind], order_by=order)
    capped = latest.mutate(rank=rank).filter(ibis._.rank < max_items)
    # Ordered aggregation is not portable (Spark has none): collect (-ts, -item, item) structs, sort the
    # array ascending (= most recent first, then the larger item id) and keep the item ids.
    key = ibis.struct({"neg_ts": -capped.ts_ms, "neg_item": -capped.item_id, "item": capped.item_id})

    def recent_first(kind: str) -> ir.ArrayValue:
        return key.collect(where=capped.kind == kind).sort().map(lambda entry: entry.item)

    lists = capped.group_by(["user_id", "day_n"]).aggregate(pos_items=recent_first("pos"), neg_items=recent_first("neg"))
    empty = ibis.literal([], type="array<int64>")
    joined = needed.left_join(lists, ["user_id", "day_n"])
    return joined.select(
        user_id=needed.user_id,
        day_n=needed.day_n,
        pos_items=ibis.coalesce(lists.pos_items, empty),
        neg_items=ibis.coalesce(lists.neg_items, empty),
    )
