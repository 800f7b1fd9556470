"""Point-in-time base features: for a row on day d, only days [d - lookback, d - 1] are used.

Per (item, d), (creator, d) and (user, d): plays, positive rate (smoothed towards the global rate of the
same past days), mean fraction watched (capped at 1 per play so that replays do not dominate), likes,
shares, mean watch time. Keys with no past get the global prior and ``has_past = 0``, never a missing
value. When even the global past is empty (the first day of the data) the prior is 0.5.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

EMPTY_PRIOR = 0.5


def daily_stats(events: ir.Table, keys: list[str]) -> ir.Table:
    """One row per (keys, day_n) with additive sums, so that rolling windows are sums of days."""
    return events.group_by([*keys, "day_n"]).aggregate(
        plays=events.count(),
        positives=events.label.sum(),
        watch_ms=events.watch_ms.sum(),
        fraction=ibis.least(events.fraction_watch, 1.0).sum(),
        likes=events.like.sum(),
        shares=events.share.sum(),
    )


def rolling_stats(daily: ir.Table, keys: list[str], days: ir.Table, lookback: int) -> ir.Table:
    """Sums of ``daily`` over [d - lookback, d - 1] for every d in ``days`` (column ``day_n``).

    Returns keys + ``day_n`` (= d) + the summed columns; only (key, d) pairs with some past appear.
    """
    past = daily.rename(past_day="day_n")
    joined = days.join(past, [past.past_day >= days.day_n - lookback, past.past_day < days.day_n])
    return joined.group_by([*keys, "day_n"]).aggregate(
        plays=joined.plays.sum(),
        positives=joined.positives.sum(),
        watch_ms=joined.watch_ms.sum(),
        fraction=joined.fraction.sum(),
        likes=joined.likes.sum(),
        shares=joined.shares.sum(),
    )


def global_priors(events: ir.Table, days: ir.Table, lookback: int) -> ir.Table:
    """Per day d: the global positive rate and mean fraction watched over [d - lookback, d - 1]."""
    daily = daily_stats(events.mutate(all_=ibis.literal(0)), ["all_"])
    past = rolling_stats(daily, ["all_"], days, lookback)
    priors = days.left_join(past, "day_n").select(
        day_n=days.day_n,
        prior_rate=ibis.coalesce(past.positives / past.plays, EMPTY_PRIOR),
        prior_fraction=ibis.coalesce(past.fraction / past.plays, EMPTY_PRIOR),
    )
    return priors


def key_stats_by_day(
    events: ir.Table, key: str, prefix: str, days: ir.Table, priors: ir.Table, lookback: int, smoothing: float
) -> ir.Table:
    """Point-in-time statistics per (``key``, d) for every key with a past and every d in ``days``.

    Columns: key, day_n, {prefix}_plays, _pos_rate, _mean_fraction, _mean_watch_s, _likes, _shares.
    """
    past = rolling_stats(daily_stats(events, [key]), [key], days, lookback)
    past = past.join(priors, "day_n")
    return past.select(
        key,
        "day_n",
        **{
            f"{prefix}_plays": past.plays.cast("float64"),
            f"{prefix}_pos_rate": (past.positives + smoothing * past.prior_rate) / (past.plays + smoothing),
            f"{prefix}_mean_fraction": (past.fraction + smoothing * past.prior_fraction) / (past.plays + smoothing),
            f"{prefix}_mean_watch_s": past.watch_ms / past.plays / 1000.0,
            f"{prefix}_likes": past.likes.cast("float64"),
            f"{prefix}_shares": past.shares.cast("float64"),
        },
    )


def join_key_stats(
    rows: ir.Table, stats: ir.Table, key: str, prefix: str, priors: ir.Table, keep: tuple[str, ...]
) -> ir.Table:
    """Left-join ``stats`` (from ``key_stats_by_day``) onto ``rows`` by (key, day_n); keys without a past get
    the prior.

    ``keep`` lists the feature names to keep (e.g. ``("plays", "pos_rate")``); ``{prefix}_has_past`` is added.
    """
    joined = rows.left_join(stats, [key, "day_n"]).drop(f"{key}_right", "day_n_right")
    joined = joined.left_join(priors, "day_n").drop("day_n_right")
    fill = {
        "plays": 0.0,
        "likes": 0.0,
        "shares": 0.0,
        "mean_watch_s": 0.0,
        "pos_rate": joined.prior_rate,
        "mean_fraction": joined.prior_fraction,
    }
    has_past = joined[f"{prefix}_plays"].notnull()
    filled = {f"{prefix}_{name}": ibis.coalesce(joined[f"{prefix}_{name}"], fill[name]) for name in keep}
    dropped = [f"{prefix}_{name}" for name in fill if name not in keep and f"{prefix}_{name}" in joined.schema()]
    return joined.mutate(**filled, **{f"{prefix}_has_past": has_past.cast("int8")}).drop(
        "prior_rate", "prior_fraction", *dropped
    )
