"""Item filter, then client filter, both counted in the training window (see the experiment sheet)."""

from __future__ import annotations

import ibis.expr.types as ir

from twotower.config import FilterConfig


def filter_items(train: ir.Table, filters: FilterConfig) -> ir.Table:
    """Rows of items with at least ``item.min_interactions`` plays in the training window."""
    counts = train.group_by("item_id").aggregate(plays=train.count())
    kept = counts.filter(counts.plays >= filters.item.min_interactions).select("item_id")
    return train.semi_join(kept, "item_id")


def filter_clients(train: ir.Table, filters: FilterConfig) -> ir.Table:
    """Rows of users with min..max interactions and enough positives and negatives (in ``train``)."""
    client = filters.client
    per_user = train.group_by("user_id").aggregate(n=train.count(), positives=train.label.sum())
    kept = per_user.filter(
        (per_user.n >= client.min_interactions)
        & (per_user.n <= client.max_interactions)
        & (per_user.positives >= client.min_positives)
        & (per_user.n - per_user.positives >= client.min_negatives)
    ).select("user_id")
    return train.semi_join(kept, "user_id")
