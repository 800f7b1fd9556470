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


def offset_changes(first_ms: int, last_ms: int, timezone: str) -> list[tuple[int, int]]:
    """The zone's UTC offset over [first_ms, last_ms] as (from_ms, offset_ms) runs, first run from -inf.

    Offsets are read hour by hour (zone changes fall on whole hours, or half hours for a few zones whose
    hour-start reading is then early by at most 30 minutes); a year with daylight saving gives 3 runs.
    """
    zone = ZoneInfo(timezone)
    runs: list[tuple[int, int]] = []
    for hour in range(first_ms // MS_PER_HOUR, last_ms // MS_PER_HOUR + 1):
        local = dt.datetime.fromtimestamp(hour * 3600, tz=dt.UTC).astimezone(zone)
        offset = int(local.utcoffset().total_seconds() * 1000)
        if not runs or runs[-1][1] != offset:
            runs.append((hour * MS_PER_HOUR, offset))
    return runs


def add_local_time(events: ir.Table, timezone: str, bounds: tuple[int, int] | None = None) -> ir.Table:
    """Add ``day_n`` (local calendar day as days since 1970-01-01), ``hour`` (0..23) and ``dow`` (0=Monday).

    Time-zone functions differ between SQL engines; the zone's offsets, computed here and written into the
    expression as a CASE over time ranges, are portable. ``bounds``: the first and last ``ts_ms`` when
    already known (saves a pass over the data).
    """
    if bounds is None:
        row = events.aggregate(lo=events.ts_ms.min(), hi=events.ts_ms.max()).to_pyarrow().to_pylist()[0]
        bounds = (row["lo"], row["hi"])
    runs = offset_changes(bounds[0], bounds[1], timezone)
    offset = ibis.literal(runs[-1][1], type="int64")
    if len(runs) > 1:  # the latest run whose start is <= ts_ms
        offset = ibis.cases(*[(events.ts_ms < start, prev) for (start, _), (_, prev) in zip(runs[1:], runs, strict=False)], else_=runs[-1][1])
    local_ms = events.ts_ms + offset
    day_n = (local_ms // MS_PER_DAY).cast("int32")
    if "source_day_n" in events.schema():  # an adapter that takes the day from the source (see config)
        day_n = events.source_day_n
    return events.mutate(
        day_n=day_n,
        hour=((local_ms % MS_PER_DAY) // MS_PER_HOUR).cast("int8"),
        dow=((day_n + 3) % 7).cast("int8"),  # 1970-01-01 was a Thursday (Monday = 0)
    ).drop(*(["source_day_n"] if "source_day_n" in events.schema() else []))


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
