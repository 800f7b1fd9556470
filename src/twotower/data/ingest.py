"""Ingest adapters: read a source into canonical events, items and users (see ``schema.py``).

Adapters rename the source's columns to canonical names and keep every other source column, so that
``clean.py`` can recognise *exact* duplicates (identical in every source column) before projecting.

* ``kuairand``: a directory in the official KuaiRand layout (``log_standard_*.csv``, optionally
  ``log_random_*.csv``, ``video_features_basic_*.csv``, ``user_features_*.csv``).
* ``generic``: a Parquet or CSV events file (or a directory of them) with the columns in
  ``GENERIC_EVENT_COLUMNS``, and optional items and users tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from twotower.config import DataConfig
from twotower.data.validate import DataError, check_types, require_columns

KUAIRAND_LOG_COLUMNS = {
    "user_id": "integer",
    "video_id": "integer",
    "time_ms": "integer",
    "play_time_ms": "number",
    "duration_ms": "number",
    "is_like": "integer",
    "is_forward": "integer",
    "is_follow": "integer",
    "is_comment": "integer",
}
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

# The generic events table: one row per play. `timestamp` is UTC: a Parquet timestamp, an ISO-8601 string
# or integer epoch milliseconds. Watch time and duration are in seconds. Flags are optional (0/1).
GENERIC_EVENT_COLUMNS = {
    "user_id": "integer",
    "item_id": "integer",
    "timestamp": "timestamp",
    "watch_seconds": "number",
    "duration_seconds": "number",
}
GENERIC_EVENT_FLAGS = {"like": "integer", "share": "integer", "follow": "integer", "comment": "integer"}
GENERIC_ITEM_COLUMNS = {"item_id": "integer"}
GENERIC_ITEM_OPTIONAL = {
    "creator_id": "integer",
    "duration_seconds": "number",
    "upload_date": "date",
    "music_id": "integer",
    "width": "number",
    "height": "number",
}


@dataclass(frozen=True)
class Source:
    """A source read into (lazy) tables with canonical column names.

    ``events`` keeps every source column besides the canonical ones (for exact-duplicate detection).
    """

    events: ir.Table
    items: ir.Table | None
    users: ir.Table | None
    files: tuple[str, ...]


def read_source(con: ibis.BaseBackend, cfg: DataConfig) -> Source:
    """Read the configured source; stops with a :class:`DataError` naming the file and column."""
    check_data_path(cfg)
    if cfg.adapter == "kuairand":
        return _read_kuairand(con, cfg.path, cfg.include_random_logs, cfg.kuairand_day == "date_column")
    return _read_generic(con, cfg)


def check_data_path(cfg: DataConfig) -> None:
    """Stop early, with where to get the data, when the configured path does not exist."""
    if cfg.path.exists():
        return
    if cfg.adapter == "kuairand":
        raise DataError(
            f"data directory {cfg.path} does not exist. Get KuaiRand-Pure from https://kuairand.com (the "
            "KuaiRand-Pure archive, CC BY-SA 4.0), unpack it, and pass its directory with --data DIR "
            "(or set data.path in the config; relative paths are relative to the config file)."
        )
    raise DataError(f"events file {cfg.path} does not exist; set data.path in the config or pass --data PATH")


def _read_table(con: ibis.BaseBackend, path: Path) -> ir.Table:
    if path.suffix == ".parquet" or path.is_dir():
        return con.read_parquet(str(path / "*.parquet") if path.is_dir() else str(path))
    if path.suffix in {".csv", ".tsv", ".txt"}:
        return con.read_csv(str(path))
    raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .csv)")


def _union(tables: list[ir.Table], files: list[Path]) -> ir.Table:
    """Union same-layout files; a file whose columns differ from the first is named."""
    first = tables[0].schema()
    for table, path in zip(tables[1:], files[1:], strict=True):
        if table.schema().names != first.names:
            raise DataError(f"{path}: columns differ from {files[0]}: {table.schema().names} vs {first.names}")
    return ibis.union(*tables, distinct=False) if len(tables) > 1 else tables[0]


def _read_kuairand(con: ibis.BaseBackend, root: Path, include_random: bool, day_from_date_column: bool) -> Source:
    patterns = ["log_standard_*.csv"] + (["log_random_*.csv"] if include_random else [])
    log_files = sorted(p for pattern in patterns for p in root.glob(pattern))
    if not log_files:
        raise DataError(f"{root}: no log_standard_*.csv file; is this a KuaiRand directory?")
    logs = []
    for path in log_files:
        table = con.read_csv(str(path))
        require_columns(table, KUAIRAND_LOG_COLUMNS, str(path))
        logs.append(table)
    events = _union(logs, log_files).rename(
        item_id="video_id",
        ts_ms="time_ms",
        watch_ms="play_time_ms",
        like="is_like",
        share="is_forward",
        follow="is_follow",
        comment="is_comment",
    )
    events = events.mutate(watch_ms=events.watch_ms.cast("float64"), duration_ms=events.duration_ms.cast("float64"))
    if day_from_date_column:
        # KuaiRand's `date` (YYYYMMDD) is the Beijing day of the play time rounded to the hour.
        events = events.mutate(source_day_n=_yyyymmdd(events.date).epoch_days().cast("int32"))
    items = _kuairand_items(con, root)
    users = _kuairand_users(con, root)
    used = [*log_files, *_first(root, "video_features_basic_*.csv"), *_first(root, "user_features_*.csv")]
    return Source(events, items, users, tuple(str(p) for p in used))


def _yyyymmdd(column: ir.IntegerColumn) -> ir.DateValue:
    return ibis.date(column // 10000, (column // 100) % 100, column % 100)


def _first(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))[:1]


def _kuairand_items(con: ibis.BaseBackend, root: Path) -> ir.Table | None:
    files = _first(root, "video_features_basic_*.csv")
    if not files:
        return None
    raw = con.read_csv(str(files[0]), types={"tag": "string", "upload_dt": "string"})
    require_columns(raw, KUAIRAND_ITEM_COLUMNS, str(files[0]))
    return raw.select(
        item_id=raw.video_id.cast("int64"),
        creator_id=raw.author_id.cast("int64"),
        duration_ms=raw.video_duration.cast("float64"),
        upload_date=raw.upload_dt.try_cast("date"),
        video_type=raw.video_type.cast("string"),
        upload_type=raw.upload_type.cast("string"),
        music_id=raw.music_id.cast("int64"),
        music_type=raw.music_type.cast("string"),
        tags=raw.tag.cast("string"),
        width=raw.server_width.cast("float64"),
        height=raw.server_height.cast("float64"),
    ).distinct(on="item_id", keep="first")


def _kuairand_users(con: ibis.BaseBackend, root: Path) -> ir.Table | None:
    """Static user features: a snapshot of unknown date (possibly after the logs), treated as static."""
    files = _first(root, "user_features_*.csv")
    if not files:
        return None
    raw = con.read_csv(str(files[0]))
    require_columns(raw, {"user_id": "integer"}, str(files[0]))
    # The activity degree is the one categorical column worth keeping: encode it as an ordinal.
    degree = {}
    if "user_active_degree" in raw.schema():
        cases = (("full_active", 3.0), ("high_active", 2.0), ("middle_active", 1.0))
        degree["static_active_degree"] = raw.user_active_degree.cases(*cases, else_=0.0)
    return _static_users(raw, **degree).distinct(on="user_id", keep="first")


def _static_users(raw: ir.Table, **extra: ir.Value) -> ir.Table:
    """user_id and every numeric column as ``static_<name>`` (float64), plus ``extra`` columns."""
    numeric = [n for n, t in raw.schema().items() if n != "user_id" and (t.is_integer() or t.is_floating())]
    return raw.select(user_id=raw.user_id.cast("int64"), **{f"static_{n}": raw[n].cast("float64") for n in numeric}, **extra)


def _read_generic(con: ibis.BaseBackend, cfg: DataConfig) -> Source:
    path = cfg.path
    events = _read_table(con, path).rename({new: old for new, old in cfg.columns.items()})
    require_columns(events, GENERIC_EVENT_COLUMNS, str(path))
    check_types(events, GENERIC_EVENT_FLAGS, str(path))
    events = events.mutate(
        ts_ms=_epoch_ms(events.timestamp, con.name),
        watch_ms=events.watch_seconds.cast("float64") * 1000.0,
        duration_ms=events.duration_seconds.cast("float64") * 1000.0,
        **{flag: (events[flag].cast("int64") if flag in events.schema() else ibis.literal(0)) for flag in GENERIC_EVENT_FLAGS},
    ).drop("timestamp", "watch_seconds", "duration_seconds")
    _check_timestamps(events, str(path))
    items = _generic_items(con, cfg.items_path) if cfg.items_path else None
    users = _generic_users(con, cfg.users_path) if cfg.users_path else None
    files = [str(p) for p in (path, cfg.items_path, cfg.users_path) if p is not None]
    return Source(events, items, users, tuple(files))


@ibis.udf.scalar.builtin(name="epoch_ms")
def _duckdb_epoch_ms(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """DuckDB's epoch_ms: several times faster than casting through the session time zone."""


@ibis.udf.scalar.builtin(name="unix_millis")
def _spark_epoch_ms(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """Spark's unix_millis."""


def _epoch_ms(column: ir.Column, backend: str) -> ir.IntegerColumn:
    """UTC epoch milliseconds of a timestamp, an ISO-8601 string (UTC unless it carries an offset) or
    integer epoch milliseconds. Unparsable strings become NULL and are reported by the caller."""
    dtype = column.type()
    if dtype.is_integer():
        return column.cast("int64")
    stamp = column.try_cast(dt.Timestamp(timezone="UTC")) if dtype.is_string() else column.cast(dt.Timestamp(timezone="UTC"))
    return (_spark_epoch_ms if backend == "pyspark" else _duckdb_epoch_ms)(stamp)


def _check_timestamps(events: ir.Table, source: str) -> None:
    """A timestamp that does not parse is an error (with an example), not a silently dropped row."""
    bad = events.filter(events.ts_ms.isnull())
    count = bad.count().execute()
    if count:
        raise DataError(f"{source}: column 'timestamp' has {count} value(s) that are missing or not a UTC timestamp")


def _generic_items(con: ibis.BaseBackend, path: Path) -> ir.Table:
    raw = _read_table(con, path)
    require_columns(raw, GENERIC_ITEM_COLUMNS, str(path))
    check_types(raw, GENERIC_ITEM_OPTIONAL, str(path))
    schema = raw.schema()

    def optional(name: str, dtype: str) -> ir.Value:
        return raw[name].cast(dtype) if name in schema else ibis.null(dtype)

    return raw.select(
        item_id=raw.item_id.cast("int64"),
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
    ).distinct(on="item_id", keep="first")


def _generic_users(con: ibis.BaseBackend, path: Path) -> ir.Table:
    raw = _read_table(con, path)
    require_columns(raw, {"user_id": "integer"}, str(path))
    return _static_users(raw)
