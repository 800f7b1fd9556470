"""The catalog and the catalog-retrieval sets of one experiment (docs/retrieval.md).

- ``catalog_by_day``: for every day d asked for, every item that exists at the start of d (upload date on or
  before d; an item without an upload date counts from its first play), with its item-side base features
  as of d (the same point-in-time rules as training rows). Items never played in the training window stay
  in: a content tower can score them.
- ``retrieval_sets``: for the validation day d, the users with a positive play on d, their targets (the
  positive items, flagged when outside the catalog or already seen), and their seen items (everything they
  played in the lookback window before d).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir


def item_attributes(events: ir.Table, items: ir.Table | None) -> ir.Table:
    """One row per item of the items table (or, without one, per played item): item_id, creator_id,
    start_day (upload day, else first play day), duration_ms (the table's, else the mean of its plays).

    ``events``: all cleaned events (every day of the data). Duration and creator are item properties, not
    outcomes, so reading them from any play is not a leak; the first play day only decides from when the
    item is in the catalog.
    """
    played = events.group_by("item_id").aggregate(
        first_day=events.day_n.min(),
        play_duration_ms=events.duration_ms.mean(),
        play_creator=events.creator_id.max(),
    )
    if items is None:
        return played.select(
            "item_id",
            creator_id=played.play_creator,
            start_day=played.first_day,
            duration_ms=played.play_duration_ms,
        )
    joined = items.left_join(played, "item_id")
    upload_day = joined.upload_date.epoch_days().cast("int32")
    return joined.select(
        item_id=items.item_id,
        creator_id=ibis.coalesce(items.creator_id, -1),
        start_day=ibis.coalesce(upload_day, joined.first_day),
        duration_ms=ibis.coalesce(items.duration_ms, joined.play_duration_ms),
    )


def catalog_by_day(
    attributes: ir.Table, days: ir.Table, add_features: Callable[[ir.Table], ir.Table]
) -> ir.Table:
    """(day_n, item_id, creator_id, duration_ms) of the items existing at the start of every day in
    ``days``, passed through ``add_features`` (the item-side base features as of each row's day)."""
    existing = days.cross_join(attributes)
    existing = existing.filter(existing.start_day.notnull() & (existing.start_day <= existing.day_n))
    rows = existing.select("day_n", "item_id", "creator_id", "duration_ms")
    return add_features(rows)


@dataclass(frozen=True)
class RetrievalSets:
    """Lazy tables of the validation day's catalog retrieval (see the module docstring)."""

    users: ir.Table  # user_id, day_n, dow, hour (of the user's first play that day), cold (no seen item)
    targets: ir.Table  # user_id, item_id, in_catalog, seen
    seen: ir.Table  # user_id, item_id


def retrieval_sets(events: ir.Table, val_day: int, lookback: int, catalog_ids: ir.Table) -> RetrievalSets:
    """The validation day ``val_day``'s users with a positive play, their targets and seen items.

    ``events``: cleaned, labelled events with ``day_n``; ``catalog_ids``: ``item_id`` of that day's catalog.
    """
    day = events.filter(events.day_n == val_day)
    positives = day.filter(day.label == 1).select("user_id", "item_id").distinct()
    users = positives.select("user_id").distinct()
    past = events.filter((events.day_n >= val_day - lookback) & (events.day_n < val_day))
    seen = past.semi_join(users, "user_id").select("user_id", "item_id").distinct()
    in_catalog = catalog_ids.select("item_id").distinct().mutate(in_catalog=ibis.literal(True))
    flagged = positives.left_join(in_catalog, "item_id").drop("item_id_right")
    flagged = flagged.left_join(seen.mutate(seen=ibis.literal(True)), ["user_id", "item_id"])
    targets = flagged.select(
        "user_id",
        "item_id",
        in_catalog=ibis.coalesce(flagged.in_catalog, False),
        seen=ibis.coalesce(flagged.seen, False),
    )
    first = day.semi_join(users, "user_id").group_by("user_id").aggregate(
        dow=day.dow.argmin(day.ts_ms), hour=day.hour.argmin(day.ts_ms)
    )
    has_past = seen.select("user_id").distinct().mutate(has_past=ibis.literal(True))
    user_rows = first.left_join(has_past, "user_id").drop("user_id_right")
    user_rows = user_rows.select(
        "user_id",
        "dow",
        "hour",
        day_n=ibis.literal(val_day, type="int32"),
        cold=user_rows.has_past.isnull(),
    )
    return RetrievalSets(user_rows, targets, seen)
