"""Cleaning: drop invalid rows and exact duplicates (counted), add local calendar time and labels."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir

from twotower.config import LabelConfig
from twotower.data.funnel import Funnel
from twotower.data.schema import EVENT_COLUMNS
from twotower.data.validate import DataError

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Cleaned:
    """Valid rows without exact duplicates (lazy), the valid-row count and the valid rows' time bounds."""

    events: ir.Table
    valid_rows: int
    first_ms: int
    last_ms: int


def clean_events(events: ir.Table, funnel: Funnel) -> Cleaned:
    """Drop rows that cannot be used, then exact duplicates; invalid rows are counted in ``funnel.drops``.

    Invalid: a missing id or timestamp, ``duration_ms <= 0`` (fraction watched undefined) or a negative
    watch time. Exact duplicates: rows identical in every source column (one copy is kept); the caller
    counts them once the result is materialised (``valid_rows`` minus its rows).
    """
    invalid = {
        "missing user_id, item_id or timestamp": events.user_id.isnull() | events.item_id.isnull() | events.ts_ms.isnull(),
        "duration <= 0 or missing": events.duration_ms.isnull() | (events.duration_ms <= 0),
        "watch time < 0 or missing": events.watch_ms.isnull() | (events.watch_ms < 0),
    }
    conditions = list(invalid.values())
    any_invalid = ibis.or_(*conditions)
    # One pass: each reason counts the rows not already counted by an earlier one.
    counts = events.aggregate(
        total=events.count(),
        first_ms=events.ts_ms.min(where=~any_invalid),
        last_ms=events.ts_ms.max(where=~any_invalid),
        **{f"c{i}": (cond & ~ibis.or_(*conditions[:i]) if i else cond).sum() for i, cond in enumerate(conditions)},
    ).to_pyarrow().to_pylist()[0]
    for i, reason in enumerate(invalid):
        funnel.drop(reason, counts[f"c{i}"] or 0)
    valid_rows = counts["total"] - sum(counts[f"c{i}"] or 0 for i in range(len(conditions)))
    if not valid_rows:
        raise DataError("no valid events: every row was dropped (see the counted reasons)")
    return Cleaned(events.filter(~any_invalid).distinct(), valid_rows, counts["first_ms"], counts["last_ms"])


def timezone_offsets(first_ms: int, last_ms: int, timezone: str) -> ibis.Table:
    """One row per UTC hour in [first_ms, last_ms]: ``utc_hour`` and the zone's ``offset_ms`` then.

    Time-zone arithmetic is not portable across SQL engines; a small offset table joined on the hour is.
    """
    zone = ZoneInfo(timezone)
    first_hour, last_hour = first_ms // MS_PER_HOUR, last_ms // MS_PER_HOUR
    hours = list(range(first_hour, last_hour + 1))
    offsets = [
        int(dt.datetime.fromtimestamp(h * 3600, tz=dt.UTC).astimezone(zone).utcoffset().total_seconds() * 1000)
        for h in hours
    ]
    return ibis.memtable({"utc_hour": hours, "offset_ms": offsets})


def add_local_time(events: ir.Table, timezone: str, bounds: tuple[int, int] | None = None) -> ir.Table:
    """Add ``day_n`` (local calendar day as days since 1970-01-01), ``hour`` (0..23) and ``dow`` (0=Monday).

    ``bounds``: the first and last ``ts_ms`` when already known (saves a pass over the data).
    """
    if bounds is None:
        row = events.aggregate(lo=events.ts_ms.min(), hi=events.ts_ms.max()).to_pyarrow().to_pylist()[0]
        bounds = (row["lo"], row["hi"])
    offsets = timezone_offsets(bounds[0], bounds[1], timezone)
    joined = events.mutate(utc_hour=events.ts_ms // MS_PER_HOUR).join(offsets, "utc_hour")
    local_ms = joined.ts_ms + joined.offset_ms
    day_n = (local_ms // MS_PER_DAY).cast("int32")
    if "source_day_n" in joined.schema():  # an adapter that takes the day from the source (see config)
        day_n = joined.source_day_n
    return joined.mutate(
        day_n=day_n,
        hour=((local_ms % MS_PER_DAY) // MS_PER_HOUR).cast("int8"),
        dow=((day_n + 3) % 7).cast("int8"),  # 1970-01-01 was a Thursday (Monday = 0)
    ).drop("utc_hour", "offset_ms", *(["source_day_n"] if "source_day_n" in joined.schema() else []))


def label_expression(events: ir.Table, label: LabelConfig) -> ir.BooleanValue:
    """The positive criterion: fraction_watch > threshold, OR any configured event flag."""
    parts = []
    if label.fraction_watch_above is not None:
        parts.append(events.fraction_watch > label.fraction_watch_above)
    parts.extend(events[flag] > 0 for flag in label.or_events)
    return ibis.or_(*parts)


def canonical_events(events: ir.Table, label: LabelConfig) -> ir.Table:
    """Project cleaned events to the canonical columns (+ ``day_n``) and add ``label``."""
    events = events.mutate(fraction_watch=events.watch_ms / events.duration_ms)
    columns = [c for c in EVENT_COLUMNS if c != "day"] + ["day_n"]
    events = events.select(*columns)
    return events.mutate(label=label_expression(events, label).cast("int8"))


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def day_date(day_n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day_n))
