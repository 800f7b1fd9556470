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
from twotower.data.validate import DataError, not_finite

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
EPOCH = dt.date(1970, 1, 1)
# Plausible plays: timestamps in [1970, 2100) UTC, watch times and durations up to 1e12 ms (~32 years),
# durations from a microsecond. Outside these, sums and ratios could overflow to inf.
TS_MIN_MS, TS_MAX_MS = 0, 4_102_444_800_000
MAX_MS, MIN_DURATION_MS = 1e12, 0.001
FLAGS = ("like", "share", "follow", "comment")


@dataclass(frozen=True)
class Cleaned:
    """Valid rows without exact duplicates (lazy), the valid-row count and the valid rows' time bounds."""

    events: ir.Table
    valid_rows: int
    first_ms: int
    last_ms: int


def invalid_reasons(events: ir.Table) -> dict[str, ir.BooleanValue]:
    """Why a canonical event row cannot be used, by reason; a row counts under the first reason it meets.

    The conditions are never NULL (a NULL would drop a row without counting it). Non-finite values get
    their own reasons before the range checks (engines order NaN differently: DuckDB puts it above every
    number, and Spark's isnull is true for it). The upper bound keeps sums and ratios of watch times
    finite: a play longer than ~32 years, or a video shorter than a microsecond, is a broken value.
    """
    watch, duration = events.watch_ms, events.duration_ms
    flags = ibis.or_(*[events[flag].isnull() for flag in FLAGS])
    return {
        "missing user_id, item_id or timestamp": events.user_id.isnull() | events.item_id.isnull() | events.ts_ms.isnull(),
        f"timestamp before {day_date(TS_MIN_MS // MS_PER_DAY)} or from {day_date(TS_MAX_MS // MS_PER_DAY)} on (UTC)": (
            (events.ts_ms < TS_MIN_MS) | (events.ts_ms >= TS_MAX_MS)
        ),
        "duration NaN or ±inf": not_finite(duration),
        "watch time NaN or ±inf": not_finite(watch),
        "duration <= 0 or missing": duration.isnull() | (duration <= 0),
        "watch time < 0 or missing": watch.isnull() | (watch < 0),
        f"watch time or duration above {MAX_MS:.0e} ms, or duration below {MIN_DURATION_MS} ms": (
            (watch > MAX_MS) | (duration > MAX_MS) | (duration < MIN_DURATION_MS)
        ),
        "missing like, share, follow or comment flag": flags,
    }


def clean_events(events: ir.Table, funnel: Funnel) -> Cleaned:
    """Drop rows that cannot be used, then exact duplicates; invalid rows are counted in ``funnel.drops``.

    Invalid: see :func:`invalid_reasons` (e.g. ``duration_ms <= 0``: fraction watched undefined). Exact
    duplicates: rows identical in every source column (one copy is kept); the caller counts them once the
    result is materialised (``valid_rows`` minus its rows).
    """
    invalid = invalid_reasons(events)
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
    if not counts["total"]:
        raise DataError("no events: the source has no rows")
    if not valid_rows:
        reasons = "; ".join(f"{reason}: {counts[f'c{i}']}" for i, reason in enumerate(invalid) if counts[f"c{i}"])
        raise DataError(f"no valid events: every one of the {counts['total']} rows was dropped ({reasons})")
    return Cleaned(events.filter(~any_invalid).distinct(), valid_rows, counts["first_ms"], counts["last_ms"])


def offset_changes(first_ms: int, last_ms: int, timezone: str) -> list[tuple[int, int]]:
    """The zone's UTC offset over [first_ms, last_ms] as (from_ms, offset_ms) runs, first run from -inf.

    Offsets are read at hour starts (zone changes fall on whole hours, or half hours for a few zones whose
    hour-start reading is then early by at most 30 minutes), one day apart; where two readings differ, a
    binary search finds the hour of the change. A year with daylight saving gives 3 runs; a zone that
    changed twice within one day (and back) would be missed. All of 1970..2100 costs ~50k readings.
    """
    zone = ZoneInfo(timezone)

    def offset(hour: int) -> int:
        local = dt.datetime.fromtimestamp(hour * 3600, tz=dt.UTC).astimezone(zone)
        return int(local.utcoffset().total_seconds() * 1000)

    hour, last = first_ms // MS_PER_HOUR, last_ms // MS_PER_HOUR
    runs = [(hour * MS_PER_HOUR, offset(hour))]
    while hour < last:
        step = min(hour + 24, last)
        if offset(step) == runs[-1][1]:
            hour = step
            continue
        low, high = hour, step  # offset(low) is the current run's, offset(high) is not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == runs[-1][1] else (low, middle)
        runs.append((high * MS_PER_HOUR, offset(high)))
        hour = high
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
