"""The directory ``prepare`` writes: claimed with a marker, filled atomically, marked complete last.

``prepare.json`` is written first with ``"state": "running"`` and rewritten with ``"completed"`` after
every other file, so a directory can be told apart in three states:

* completed: never replaced (results are never overwritten; choose another ``--out``);
* interrupted (the process was killed, the marker still says running): refused unless ``overwrite``,
  which removes the files ``prepare`` writes and starts again;
* anything else that is not empty: refused, and never deleted (the files are not ``prepare``'s).

The directory is a local path or a URI (``hdfs://``, ``s3a://``, ``file://``): the engine writes the
Parquet data there itself, and the markers and ``funnel.json`` go through the same location
(:mod:`twotower.data.storage`). Every output is written under a temporary name in the same directory and
renamed when complete, where the filesystem renames atomically (local disks, HDFS), so a killed
``prepare`` never leaves a truncated file under a final name; on object stores the outputs are written in
place and ``prepare.json`` alone says they are complete. A ``prepare`` that fails with an exception
removes what it wrote (and the directory, if it created it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path

import ibis
import ibis.expr.types as ir

from twotower.data.engine import engine_uri, spark_session
from twotower.data.prepared import MARKER
from twotower.data.storage import Location, locate, write_atomic, write_json
from twotower.data.validate import DataError

OUTPUTS = ("train", "eval", "history", "items", "users", "popularity", "catalog", "retrieval_users", "retrieval_targets", "seen")
FILES = (*(f"{name}.parquet" for name in OUTPUTS), "funnel.json", MARKER)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _state(out_dir: Location) -> dict:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return {"state": "unreadable"}  # a marker cut short by a crash: treated as interrupted


def claim(out_dir: str | Path | Location, overwrite: bool, info: dict) -> bool:
    """Make ``out_dir`` ready for a new result and mark it running; returns whether it was created.

    Raises :class:`DataError` for a completed result, an interrupted one without ``overwrite``, a
    directory of other files, a path that is a file, or a directory that cannot be written.
    """
    out_dir = locate(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file; choose a directory")
    existing = out_dir.is_dir() and bool(out_dir.entries())
    if existing:
        if not (out_dir / MARKER).exists():
            raise DataError(
                f"{out_dir} is not empty and holds no {MARKER} (not a prepare result); choose a new or empty --out "
                "(its files are left alone)"
            )
        state = _state(out_dir)
        if state.get("state") == "completed":
            raise DataError(
                f"{out_dir} already holds prepared data (completed {state.get('finished', '?')}); choose another --out "
                "(results are never overwritten)"
            )
        if not overwrite:
            raise DataError(
                f"{out_dir} holds an interrupted prepare (started {state.get('started', '?')}, never completed); "
                "pass --overwrite to replace it, or choose another --out"
            )
        _remove_outputs(out_dir)
    created = not out_dir.exists()
    try:
        out_dir.mkdir()
        write_json(out_dir / MARKER, {"state": "running", "started": _now(), **info})
    except OSError as exc:
        raise DataError(f"cannot write to {out_dir} ({exc.strerror or exc}); choose a writable --out") from None
    return created


def _remove_outputs(out_dir: Location) -> None:
    """Remove what ``prepare`` writes (final names and temporary ones); leave anything else."""
    for entry in out_dir.entries():
        temporary = entry.name.startswith(".") and ".tmp." in entry.name
        if entry.name in FILES or temporary:
            entry.remove()  # a file, or a directory (Spark's output, a table partitioned by day)


def release(out_dir: str | Path | Location, created: bool) -> None:
    """After a failure: remove what was written, and the directory if this run created it."""
    out_dir = locate(out_dir)
    with contextlib.suppress(OSError):
        _remove_outputs(out_dir)
        if created and not out_dir.entries():
            out_dir.remove()


def complete(out_dir: str | Path | Location, info: dict) -> None:
    """Mark ``out_dir`` completed (the last write of ``prepare``)."""
    out_dir = locate(out_dir)
    started = _state(out_dir).get("started")
    files = sorted(e.name for e in out_dir.entries() if e.name in FILES and e.name != MARKER)
    write_json(out_dir / MARKER, {"state": "completed", "started": started, "finished": _now(), **info, "files": files})


def write_parquet(
    table: ir.Table, target: str | Path | Location, order_by: tuple[str, ...] = (), by_day: bool = False
) -> Location:
    """Execute ``table`` into the Parquet output ``target`` atomically (see the module docstring).

    ``table`` has an integer ``day_n`` (days since 1970-01-01) when it is per day: it is written as
    ``day``, a timestamp at midnight (no zone), or with ``by_day`` (the layout for large data) as Hive
    folders ``day=YYYY-MM-DD/`` (``data.prepared.read_table`` restores the timestamp). Otherwise the
    output is one Parquet file; on Spark its rows then pass through one task, so with ``by_day`` a table
    without a day is written by Spark as a directory of parts instead. Rows are sorted by ``order_by``
    (``day`` for the day).
    """
    target = locate(target)
    con = table.get_backend()
    parts = by_day and "day_n" not in table.schema()
    by_day = by_day and not parts
    if "day_n" in table.schema():
        # explicit casts: date + interval is a TIMESTAMP on DuckDB and a DATE on Spark
        day = (ibis.date(1970, 1, 1) + table.day_n.as_interval("D")).cast("timestamp")
        table = table.mutate(day=day.cast("date") if by_day else day).drop("day_n")
    if order_by:
        table = table.order_by(list(order_by))
    if con.name == "pyspark":
        write_atomic(target, lambda tmp: _spark_write(con, table, tmp, by_day, parts))
    else:
        options = {"partition_by": ("day",)} if by_day else {}
        write_atomic(target, lambda tmp: table.to_parquet(engine_uri(tmp, con.name), **options))
    return target


def _spark_write(con: ibis.BaseBackend, table: ir.Table, target: Location, by_day: bool, parts: bool) -> None:
    """Spark writes a directory of part files: by day or as parts in parallel, else one part moved to ``target``."""
    from pyspark.sql import functions as F

    con._run_pre_execute_hooks(table)  # noqa: SLF001 - what Ibis's own writers do first (in-memory tables)
    frame = spark_session(con).sql(con.compile(table))
    # a zone-free timestamp, as DuckDB writes it (Spark's TIMESTAMP is an instant, written with UTC)
    stamps = [f.name for f in frame.schema.fields if f.dataType.typeName() == "timestamp"]
    frame = frame.select(*[F.col(c).cast("timestamp_ntz").alias(c) if c in stamps else F.col(c) for c in frame.columns])
    if by_day or parts:
        writer = frame.write.partitionBy("day") if by_day else frame.write
        writer.parquet(engine_uri(target, con.name))
        return
    directory = target.parent / f".{target.name}.parts"
    try:
        frame.coalesce(1).write.parquet(engine_uri(directory, con.name))
        (part,) = [f for f in directory.files(recursive=False) if f.name.endswith(".parquet") and not f.name.startswith((".", "_"))]
        target.fs.move(part.path, target.path)
    finally:
        with contextlib.suppress(OSError):
            directory.remove()
