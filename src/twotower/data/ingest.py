"""Ingest adapters: read a source into canonical events, items and users (see ``schema.py``).

Adapters rename the source's columns to canonical names and keep every other source column, so that
``clean.py`` can recognise *exact* duplicates (identical in every source column) before projecting.

* ``kuairand``: a directory in the official KuaiRand layout (``log_standard_*.csv``, optionally
  ``log_random_*.csv``, ``video_features_basic_*.csv`` (required), ``user_features_*.csv``).
* ``generic``: a Parquet or CSV events file, or a directory of them (Hive partitions included), with the
  columns in ``GENERIC_EVENT_COLUMNS``, and optional items and users tables.

Items and users tables hold one row per id: rows that repeat an id with the same values are removed (and
counted in ``Source.notes``); an id with conflicting rows stops with a :class:`DataError` naming the ids
and the file, because which row is right cannot be guessed. NaN and ±inf in their numeric side
information are read as missing (counted).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from twotower.config import Config, DataConfig
from twotower.data.readers import read_csv_files, read_table
from twotower.data.storage import Location, locate
from twotower.data.validate import (
    DataError,
    as_int64,
    check_types,
    finite_or_null,
    not_finite,
    require_columns,
)

KUAIRAND_LOG_COLUMNS = {
    "user_id": "integer",
    "video_id": "integer",
    "time_ms": "integer",
    "play_time_ms": "number",
    "duration_ms": "number",
    "is_like": "flag",
    "is_forward": "flag",
    "is_follow": "flag",
    "is_comment": "flag",
}
# user_features_*.csv columns that are codes, not quantities: the activity segment, flags (is_live_streamer
# holds the sentinel -124), the range buckets and the anonymised one-hot feature indices. The counts
# (follow/fans/friend numbers, register days) stay numeric.
KUAIRAND_USER_CATEGORIES = (
    "user_active_degree",
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
    *(f"onehot_feat{i}" for i in range(18)),
)
KUAIRAND_ITEM_COLUMNS = {
    "video_id": "integer",
    "author_id": "integer",
    "video_duration": "number",
    "upload_dt": "date",
    "video_type": "string",
    "upload_type": "string",
    "music_id": "number",
    "music_type": "number",
    "tag": "string",
    "server_width": "number",
    "server_height": "number",
}
KUAIRAND_ITEMS_FILE = "video_features_basic_*.csv"

# The generic events table: one row per play. `timestamp` is UTC: a Parquet timestamp, an ISO-8601 string
# or integer epoch milliseconds (other units: data.timestamp_unit). Watch time and duration are in seconds.
# Flags are optional (0/1).
GENERIC_EVENT_COLUMNS = {
    "user_id": "integer",
    "item_id": "integer",
    "timestamp": "timestamp",
    "watch_seconds": "number",
    "duration_seconds": "number",
}
GENERIC_EVENT_FLAGS = {"like": "flag", "share": "flag", "follow": "flag", "comment": "flag"}
GENERIC_ITEM_COLUMNS = {"item_id": "integer"}
GENERIC_ITEM_OPTIONAL = {
    "creator_id": "integer",
    "duration_seconds": "number",
    "upload_date": "date",
    "music_id": "integer",
    "width": "number",
    "height": "number",
}
# Integer epoch timestamps: (multiply, divide) to milliseconds per unit, and the magnitude from which
# values look like that unit (1e8 s, 1e11 ms, 1e14 us and 1e17 ns are all March 1973).
TO_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}
UNIT_FROM_MAGNITUDE = (("ns", 1e17), ("us", 1e14), ("ms", 1e11), ("s", 1e8))
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


@dataclass(frozen=True)
class Source:
    """A source read into (lazy) tables with canonical column names.

    ``events`` keeps every source column besides the canonical ones (for exact-duplicate detection).
    ``flags``: the event flags the source really has (an absent flag reads as 0). ``notes``: counted
    corrections made while reading (for the funnel).
    """

    events: ir.Table
    items: ir.Table | None
    users: ir.Table | None
    files: tuple[str, ...]
    flags: tuple[str, ...] = tuple(GENERIC_EVENT_FLAGS)
    notes: dict[str, object] = field(default_factory=dict)


def used_flags(cfg: Config) -> tuple[str, ...]:
    """Event flags that change labels or weights: ``label.or_events``; like and share for ``events`` weights."""
    flags = list(cfg.label.or_events)
    if cfg.sample_weight.mode == "events":
        flags += ["like", "share"]
    return tuple(dict.fromkeys(flags))


def read_source(con: ibis.BaseBackend, cfg: DataConfig, flags: Collection[str] = ()) -> Source:
    """Read the configured source; stops with a :class:`DataError` naming the file and column.

    ``flags``: event flags the caller uses (see :func:`used_flags`); one the source lacks is an error.
    """
    check_data_path(cfg)
    if cfg.adapter == "kuairand":
        source = _read_kuairand(con, locate(cfg.path), cfg.include_random_logs, cfg.kuairand_day == "date_column")
    else:
        source = _read_generic(con, cfg)
    missing = [flag for flag in flags if flag not in source.flags]
    if missing:
        mapping = ", ".join(f'{flag} = "<your column>"' for flag in missing)
        raise DataError(
            f"{cfg.path}: no column for event flag(s) {', '.join(missing)}, which the config uses (label.or_events, or "
            f"sample_weight.mode = 'events' for like/share); add a 0/1 column per play, map yours under "
            f"[data.columns] ({mapping}), or stop using the flag"
        )
    return source


def check_data_path(cfg: DataConfig) -> None:
    """Stop early, with where to get the data, when a configured path (or URI) does not exist."""
    if not locate(cfg.path).exists():
        if cfg.adapter == "kuairand":
            raise DataError(
                f"data directory {cfg.path} does not exist. Get KuaiRand-Pure from https://kuairand.com (the "
                "KuaiRand-Pure archive, CC BY-SA 4.0), unpack it, and pass its directory with --data DIR "
                "(or set data.path in the config; relative paths are relative to the config file)."
            )
        raise DataError(f"events file {cfg.path} does not exist; set data.path in the config or pass --data PATH")
    for key in ("items_path", "users_path"):
        path = getattr(cfg, key)
        if path is not None and not locate(path).exists():
            raise DataError(f"{path} (data.{key}) does not exist; fix data.{key} in the config or remove it")


def _read_kuairand(con: ibis.BaseBackend, root: Location, include_random: bool, day_from_date_column: bool) -> Source:
    if not root.is_dir():
        raise DataError(f"{root}: the kuairand adapter needs the KuaiRand directory (data.path), not a file")
    patterns = ["log_standard_*.csv"] + (["log_random_*.csv"] if include_random else [])
    log_files = sorted((p for pattern in patterns for p in root.glob(pattern)), key=lambda p: p.path)
    if not log_files:
        raise DataError(f"{root}: no log_standard_*.csv file; is this a KuaiRand directory?")
    logs = read_csv_files(con, log_files, single=len(log_files) == 1)
    require_columns(logs, KUAIRAND_LOG_COLUMNS, str(log_files[0]))
    events = logs.rename(
        item_id="video_id",
        ts_ms="time_ms",
        watch_ms="play_time_ms",
        like="is_like",
        share="is_forward",
        follow="is_follow",
        comment="is_comment",
    )
    events = as_int64(events, ("user_id", "item_id", "ts_ms"), str(log_files[0]))
    events = events.mutate(
        watch_ms=events.watch_ms.cast("float64"),
        duration_ms=events.duration_ms.cast("float64"),
        **{flag: events[flag].cast("int64") for flag in GENERIC_EVENT_FLAGS},
    )
    if day_from_date_column:
        # KuaiRand's `date` (YYYYMMDD) is the Beijing day of the play time rounded to the hour.
        events = events.mutate(source_day_n=_yyyymmdd(events.date).epoch_days().cast("int32"))
    items_files = _first(root, KUAIRAND_ITEMS_FILE)
    if not items_files:
        raise DataError(
            f"{root}: no {KUAIRAND_ITEMS_FILE} (video_features_basic_pure.csv in KuaiRand-Pure): it holds each "
            "video's author, duration, upload date, tags and music, which the creator features, item age and "
            "the content encoders need; copy it from the KuaiRand archive into this directory"
        )
    notes: dict[str, object] = {}
    items = _kuairand_items(con, items_files[0], notes)
    users = _kuairand_users(con, root, notes)
    used = [*log_files, *items_files, *_first(root, "user_features_*.csv")]
    return Source(events, items, users, tuple(str(p) for p in used), notes=notes)


def _yyyymmdd(column: ir.IntegerColumn) -> ir.DateValue:
    return ibis.date(column // 10000, (column // 100) % 100, column % 100)


def _first(root: Location, pattern: str) -> list[Location]:
    return root.glob(pattern)[:1]


def _kuairand_items(con: ibis.BaseBackend, path: Location, notes: dict[str, object]) -> ir.Table:
    raw = read_table(con, path, "KuaiRand items file", csv_types={"tag": "string", "upload_dt": "string"})
    require_columns(raw, KUAIRAND_ITEM_COLUMNS, str(path))
    raw = as_int64(raw, ("video_id", "author_id"), str(path))
    items = raw.select(
        item_id=raw.video_id,
        creator_id=raw.author_id,
        duration_ms=raw.video_duration.cast("float64"),
        upload_date=raw.upload_dt.cast("string").try_cast("date"),
        video_type=raw.video_type.cast("string"),
        upload_type=raw.upload_type.cast("string"),
        music_id=raw.music_id.cast("int64"),
        music_type=raw.music_type.cast("string"),
        tags=raw.tag.cast("string"),
        width=raw.server_width.cast("float64"),
        height=raw.server_height.cast("float64"),
    )
    return one_row_per_key(items, "item_id", str(path), "items", notes)


def _kuairand_users(con: ibis.BaseBackend, root: Location, notes: dict[str, object]) -> ir.Table | None:
    """Static user features: a snapshot of unknown date (possibly after the logs), treated as static."""
    files = _first(root, "user_features_*.csv")
    if not files:
        return None
    raw = read_table(con, files[0], "KuaiRand users file")
    require_columns(raw, {"user_id": "integer"}, str(files[0]))
    categorical = [c for c in KUAIRAND_USER_CATEGORIES if c in raw.schema()]
    return one_row_per_key(_static_users(raw, str(files[0]), categorical), "user_id", str(files[0]), "users", notes)


def _static_users(raw: ir.Table, source: str, categorical: list[str] | tuple[str, ...] = ()) -> ir.Table:
    """user_id, every numeric column not in ``categorical`` as ``static_<name>`` (float64, a quantity) and
    every ``categorical`` column as ``cat_<name>`` (string, a code); other columns are not used."""
    missing = [c for c in categorical if c not in raw.schema()]
    if missing:
        raise DataError(f"{source}: data.user_categorical_columns names column(s) {', '.join(missing)} it does not have")
    numeric = [
        n for n, t in raw.schema().items()
        if n != "user_id" and n not in categorical and (t.is_integer() or t.is_floating() or t.is_decimal())
    ]
    raw = as_int64(raw, ["user_id"], source)
    return raw.select(
        user_id=raw.user_id,
        **{f"static_{n}": raw[n].cast("float64") for n in numeric},
        **{f"cat_{n}": raw[n].cast("string") for n in categorical},
    )


def one_row_per_key(table: ir.Table, key: str, source: str, what: str, notes: dict[str, object]) -> ir.Table:
    """One row per ``key``: repeated identical rows removed (counted in ``notes``), conflicting ones an error.

    NaN and ±inf in float columns are read as missing first (counted in ``notes``).
    """
    floats = [c for c, t in table.schema().items() if t.is_floating()]
    # one pass for the row count and the non-finite rows, one for the distinct rows per key
    bad = ibis.or_(*[not_finite(table[c]) for c in floats]) if floats else ibis.literal(False)
    counts = table.aggregate(total=table.count(), nonfinite=table.count(where=bad)).to_pyarrow().to_pylist()[0]
    if floats:
        table = table.mutate(**{c: finite_or_null(table[c]) for c in floats})
        if counts["nonfinite"]:
            notes[f"{what}: rows with NaN or ±inf side information (read as missing)"] = int(counts["nonfinite"])
    distinct = table.distinct()
    per_key = distinct.group_by(key).aggregate(n=distinct.count())
    stats = per_key.aggregate(distinct_rows=per_key.n.sum(), conflicting=(per_key.n > 1).cast("int64").sum())
    row = stats.to_pyarrow().to_pylist()[0]
    if row["conflicting"]:
        examples = per_key.filter(per_key.n > 1).order_by(key).limit(5)[key].to_pyarrow().to_pylist()
        raise DataError(
            f"{source}: {row['conflicting']} {key}(s) appear in several rows with different values (e.g. "
            f"{', '.join(map(str, examples))}); keep one row per {key}: which one is right cannot be guessed"
        )
    repeated = counts["total"] - (row["distinct_rows"] or 0)
    notes[f"{what}: repeated identical rows removed"] = int(repeated)
    return distinct


def _rename_columns(table: ir.Table, columns: dict[str, str], source: str | Path) -> ir.Table:
    """Apply ``[data.columns]`` (canonical name -> the file's column), checked against the file."""
    known = [*GENERIC_EVENT_COLUMNS, *GENERIC_EVENT_FLAGS]
    schema = table.schema()
    for canonical, name in columns.items():
        if canonical not in known:
            raise DataError(f"[data.columns] key '{canonical}' is not a column of the generic layout; the keys are: {', '.join(known)}")
        if name not in schema:
            raise DataError(f"{source}: [data.columns] maps '{canonical}' to '{name}', but the file has no column '{name}' (found: {', '.join(schema.names)})")
        if name != canonical and canonical in schema:
            raise DataError(
                f"{source}: [data.columns] maps '{canonical}' to '{name}', but the file also has a column '{canonical}'; "
                "remove the mapping or one of the columns"
            )
    names = list(columns.values())
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"[data.columns] maps several names to the column '{twice[0]}'; map each canonical name to its own column")
    return table.rename({canonical: name for canonical, name in columns.items() if canonical != name})


def _read_generic(con: ibis.BaseBackend, cfg: DataConfig) -> Source:
    path = cfg.path
    events = _rename_columns(read_table(con, path, "events file (data.path)"), cfg.columns, path)
    require_columns(events, GENERIC_EVENT_COLUMNS, str(path))
    check_types(events, GENERIC_EVENT_FLAGS, str(path))
    flags = tuple(flag for flag in GENERIC_EVENT_FLAGS if flag in events.schema())
    events = as_int64(events, ("user_id", "item_id"), str(path))
    events = events.mutate(
        ts_ms=_epoch_ms(events.timestamp, con.name, _timestamp_unit(events, cfg.timestamp_unit, path)),
        watch_ms=events.watch_seconds.cast("float64") * 1000.0,
        duration_ms=events.duration_seconds.cast("float64") * 1000.0,
        **{flag: (events[flag].cast("int64") if flag in flags else ibis.literal(0, type="int64")) for flag in GENERIC_EVENT_FLAGS},
    )
    _check_timestamps(events, str(path))
    events = events.drop("timestamp", "watch_seconds", "duration_seconds")
    notes: dict[str, object] = {}
    items = _generic_items(con, cfg.items_path, notes) if cfg.items_path else None
    users = _generic_users(con, cfg.users_path, notes, cfg.user_categorical_columns) if cfg.users_path else None
    files = [str(p) for p in (path, cfg.items_path, cfg.users_path) if p is not None]
    return Source(events, items, users, tuple(files), flags, notes)


def _timestamp_unit(events: ir.Table, unit: str, source: str | Path) -> str:
    """The unit of an integer ``timestamp``; stops when the values' size says another unit than ``unit``."""
    column = events.timestamp
    if not column.type().is_integer() and not column.type().is_decimal():
        return unit
    row = events.aggregate(lo=column.min(), hi=column.max()).to_pyarrow().to_pylist()[0]
    magnitude = max(abs(int(v)) for v in (row["lo"], row["hi"]) if v is not None) if row["hi"] is not None else 0
    guess = next((u for u, lower in UNIT_FROM_MAGNITUDE if magnitude >= lower), None)
    if guess is not None and guess != unit:
        raise DataError(
            f"{source}: column 'timestamp' holds integers up to {magnitude}, which look like epoch {UNIT_NAMES[guess]}, "
            f"but data.timestamp_unit is '{unit}' ('ms' unless set); set timestamp_unit = \"{guess}\" under [data]"
        )
    return unit


@ibis.udf.scalar.builtin(name="epoch_ms")
def _duckdb_epoch_ms(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """DuckDB's epoch_ms: several times faster than casting through the session time zone."""


@ibis.udf.scalar.builtin(name="unix_millis")
def _spark_epoch_ms(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """Spark's unix_millis."""


def _epoch_ms(column: ir.Column, backend: str, unit: str = "ms") -> ir.IntegerColumn:
    """UTC epoch milliseconds of a timestamp, an ISO-8601 string (UTC unless it carries an offset) or
    integer epoch ``unit``\\ s. Unparsable strings become NULL and are reported by the caller."""
    dtype = column.type()
    if dtype.is_integer() or dtype.is_decimal():
        multiply, divide = TO_MS[unit]
        value = column.cast("int64")
        return value * multiply if multiply > 1 else value // divide if divide > 1 else value
    stamp = column.try_cast(dt.Timestamp(timezone="UTC")) if dtype.is_string() else column.cast(dt.Timestamp(timezone="UTC"))
    return (_spark_epoch_ms if backend == "pyspark" else _duckdb_epoch_ms)(stamp)


def _check_timestamps(events: ir.Table, source: str) -> None:
    """A timestamp that does not parse is an error (with its count), not a silently dropped row; a missing
    one is dropped and counted by ``clean``."""
    count = events.filter(events.ts_ms.isnull() & events.timestamp.notnull()).count().execute()
    if count:
        raise DataError(f"{source}: column 'timestamp' has {count} value(s) that are not a UTC timestamp (ISO-8601, e.g. 2024-03-01T12:00:00Z)")


def _generic_items(con: ibis.BaseBackend, path: str | Path, notes: dict[str, object]) -> ir.Table:
    raw = read_table(con, path, "items file (data.items_path)")
    require_columns(raw, GENERIC_ITEM_COLUMNS, str(path))
    check_types(raw, GENERIC_ITEM_OPTIONAL, str(path))
    raw = as_int64(raw, ("item_id", "creator_id", "music_id"), str(path))
    schema = raw.schema()

    def optional(name: str, dtype: str) -> ir.Value:
        return raw[name].cast(dtype) if name in schema else ibis.null(dtype)

    items = raw.select(
        item_id=raw.item_id,
        creator_id=optional("creator_id", "int64"),
        duration_ms=optional("duration_seconds", "float64") * 1000.0,
        upload_date=raw.upload_date.try_cast("date") if "upload_date" in schema else ibis.null("date"),
        video_type=optional("video_type", "string"),
        upload_type=optional("upload_type", "string"),
        music_id=optional("music_id", "int64"),
        music_type=optional("music_type", "string"),
        tags=optional("tags", "string"),
        width=optional("width", "float64"),
        height=optional("height", "float64"),
        caption=optional("caption", "string"),
        cover_text=optional("cover_text", "string"),
    )
    return one_row_per_key(items, "item_id", str(path), "items", notes)


def _generic_users(
    con: ibis.BaseBackend, path: str | Path, notes: dict[str, object], categorical: tuple[str, ...] = ()
) -> ir.Table:
    raw = read_table(con, path, "users file (data.users_path)")
    require_columns(raw, {"user_id": "integer"}, str(path))
    return one_row_per_key(_static_users(raw, str(path), categorical), "user_id", str(path), "users", notes)
