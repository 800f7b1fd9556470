"""The point-in-time state of one day d, computed from the events the way ``prepare`` computes it.

For serving and ``twotower recommend`` on any day, not only the days a prepared directory holds: the user
rows (``USER_BASE`` as of the start of d), the history snapshots (positive / negative items as of the start
of d), the seen items (everything played in the lookback window before d), the items' mean watch time over
that window (the negative-history rule needs it) and, on request, the catalog of d with its item features.

Only events of days [d - lookback, d - 1] feed the features, the histories and the seen items, through the
same functions ``prepare`` uses (``features.key_stats_by_day`` / ``join_key_stats`` via
``prepare.add_base_features``, ``history.history_snapshots``, ``catalog.catalog_by_day``), so for a day and
user that ``prepare`` also wrote the values are equal (tests/test_recommend.py). Nothing of day d is read,
except that the catalog, like prepare's, dates an item without an upload date from its first play.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from twotower.config import Config
from twotower.data.catalog import catalog_by_day, item_attributes
from twotower.data.clean import day_number
from twotower.data.engine import open_engine
from twotower.data.funnel import Funnel
from twotower.data.history import history_snapshots
from twotower.data.prepare import ITEM_KEYS, USER_KEYS, add_base_features, base_feature_tables, load_events
from twotower.data.schema import USER_BASE


@dataclass(frozen=True)
class DayState:
    """What is known at the start of ``day``; U users, one row each in ``users`` and ``history``.

    ``users``: user_id, day, dow, USER_BASE, cold (no play in the lookback window), sorted by user_id;
    ``history``: user_id, day, pos_items, neg_items (most recent first, at most ``history.max_items``);
    ``seen``: user_id, item_id (played in the window); ``item_watch``: item_id, item_mean_watch_s (items
    played in the window); ``prior_rate``: the global positive rate of the window (what a user without a
    past gets as ``user_pos_rate``); ``catalog``: catalog.parquet's layout for ``day`` (None unless asked).
    """

    day: dt.date
    users: pd.DataFrame
    history: pd.DataFrame
    seen: pd.DataFrame
    item_watch: pd.DataFrame
    prior_rate: float
    catalog: pd.DataFrame | None


def day_state(
    cfg: Config,
    day: dt.date,
    user_ids: Sequence[int] | np.ndarray | None = None,
    *,
    with_catalog: bool = False,
    con: ibis.BaseBackend | None = None,
) -> DayState:
    """The state at the start of ``day`` of ``user_ids`` (None: every user with a play in the lookback
    window before ``day``), read from ``cfg``'s data with ``cfg``'s cleaning, label and history rules.

    A requested user without a play in the window is cold: no past (``user_has_past = 0``, the prior rate),
    empty histories, nothing seen."""
    con = con or open_engine(cfg.data).con
    all_events, source = load_events(con, cfg, Funnel())
    d, lookback = day_number(day), cfg.history.lookback_days
    events = all_events.filter(all_events.day_n.between(d - lookback, d - 1))
    days = ibis.memtable(pd.DataFrame({"day_n": np.array([d], np.int32)}))
    tables = base_feature_tables(events, source.items, cfg, days)
    if user_ids is None:
        users = events.select("user_id").distinct()
    else:
        users = ibis.memtable(pd.DataFrame({"user_id": np.unique(np.asarray(user_ids, np.int64))}))
    rows = users.mutate(day_n=ibis.literal(d, type="int32"))
    rows = add_base_features(rows, tables, USER_KEYS)
    item_watch = tables.by_key["item_id"].select("item_id", "day_n", "item_mean_watch_s")
    history = history_snapshots(
        events, rows.select("user_id", "day_n"), item_watch, lookback, cfg.history.max_items
    )
    seen = events.semi_join(users, "user_id").select("user_id", "item_id").distinct()
    catalog = None
    if with_catalog:
        attributes = item_attributes(all_events, source.items)
        catalog_rows = catalog_by_day(attributes, days, lambda r: add_base_features(r, tables, ITEM_KEYS))
        catalog = _dated(catalog_rows.drop("duration_ms").to_pandas()).sort_values("item_id")
    users_df = _dated(rows.to_pandas()).sort_values("user_id").reset_index(drop=True)
    users_df["dow"] = (d + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0), as clean.add_local_time
    users_df["cold"] = users_df["user_has_past"].to_numpy() == 0
    users_df = users_df[["user_id", "day", "dow", *USER_BASE, "cold"]]
    history_df = _dated(history.to_pandas()).sort_values("user_id").reset_index(drop=True)
    priors = tables.priors.to_pandas()
    return DayState(
        day=day,
        users=users_df,
        history=history_df[["user_id", "day", "pos_items", "neg_items"]],
        seen=_frame(seen, ["user_id", "item_id"]),
        item_watch=_frame(item_watch.drop("day_n"), ["item_id"]),
        prior_rate=float(priors["prior_rate"].iloc[0]),
        catalog=None if catalog is None else catalog.reset_index(drop=True),
    )


def _frame(table: ir.Table, order: list[str]) -> pd.DataFrame:
    return table.to_pandas().sort_values(order).reset_index(drop=True)


def _dated(frame: pd.DataFrame) -> pd.DataFrame:
    """``day_n`` (days since 1970-01-01) -> ``day`` (midnight timestamps), as prepare's files hold it."""
    frame = frame.copy()
    frame["day"] = pd.to_datetime(frame.pop("day_n").to_numpy(np.int64), unit="D").as_unit("us")
    return frame
