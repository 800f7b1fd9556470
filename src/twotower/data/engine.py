"""The relational engine: DuckDB (embedded) by default, Apache Spark for data beyond one machine.

All relational steps are Ibis expressions, so the same code runs on either backend. The engine's settings
come from the config (``[data.duckdb]``, ``[data.spark]``); :func:`open_engine` says in words what it used,
so that a run's funnel records it (e.g. that an active Spark session was reused as it was configured).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ibis

from twotower.config import DataConfig, DuckDBSettings, SparkSettings
from twotower.config_files import is_uri

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from twotower.data.storage import Location

# Set on a Spark session this module creates (the config's [data.spark.conf] wins over them): no console
# progress bars (they flood logs), and shuffles sized by adaptive execution rather than a fixed 200
# partitions, also below cached tables (every cached table would otherwise keep 200 partitions).
SPARK_DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
}


# The Spark session open_engine started in this process, and what it was started with (a later prepare,
# e.g. the next experiment, reuses it and says so).
_started: tuple[SparkSession, str] | None = None


@dataclass(frozen=True)
class Engine:
    """A connected backend and what was used, in words (``note``), for the funnel and the console."""

    con: ibis.BaseBackend
    note: str


def open_engine(data: DataConfig) -> Engine:
    """The backend ``data.engine`` names, set up with the config's settings for it."""
    if data.engine == "duckdb":
        return _duckdb(data.duckdb)
    if data.engine == "spark":
        return _spark(data.spark)
    raise ValueError(f"unknown engine {data.engine!r} (expected 'duckdb' or 'spark')")


def connect(engine: str = "duckdb", threads: int | None = None) -> ibis.BaseBackend:
    """A backend with default settings (``threads`` for DuckDB): for tests and interactive use."""
    settings = DataConfig(path=".", engine=engine, duckdb=DuckDBSettings(threads=threads))
    return open_engine(settings).con


def _duckdb(settings: DuckDBSettings) -> Engine:
    threads = settings.threads or os.cpu_count() or 1
    config: dict[str, object] = {"threads": threads}
    if settings.memory_limit:
        config["memory_limit"] = settings.memory_limit
    if settings.temp_directory:
        config["temp_directory"] = str(settings.temp_directory)
    con = ibis.duckdb.connect(**config)
    # Timestamps without an offset are UTC, whatever the machine's local time zone.
    con.raw_sql("SET TimeZone = 'UTC'")
    # Ibis 12 compiles array lambdas with DuckDB's arrow syntax, which DuckDB 2 disables by default.
    with contextlib.suppress(Exception):  # DuckDB 1.x has no such setting (and needs none)
        con.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
    # fetchall: DuckDB 2 refuses other work while a result is not fetched to its end
    limit, spill, version = con.raw_sql(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory'), version()"
    ).fetchall()[0]
    spill = spill or "nowhere (spilling off)"
    return Engine(con, f"duckdb {version}: {threads} threads, memory limit {limit}, spills to {spill}")


def _spark(settings: SparkSettings) -> Engine:
    global _started
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("engine 'spark' needs the spark extra: pip install 'twotower[spark]'") from exc
    active = SparkSession.getActiveSession()
    if active is not None and _started is not None and _started[0] is active:
        return Engine(ibis.pyspark.connect(active), _started[1])  # the session an earlier prepare started
    if active is not None:
        # spark-submit, a notebook or a test made the session: use it as it is (its master and conf;
        # Ibis sets the session time zone to UTC, which the data steps need)
        master = active.sparkContext.master
        note = f"spark {active.version}: the active session (master {master}) as it is; [data.spark] was not applied"
        return Engine(ibis.pyspark.connect(active), note)
    builder = SparkSession.builder.master(settings.master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    given = ", ".join(f"{k}={v}" for k, v in settings.conf.items()) or "no [data.spark.conf]"
    note = f"spark {session.version}: a new session, master {settings.master} ({given})"
    _started = (session, note.replace("a new session", "the session this process started"))
    return Engine(ibis.pyspark.connect(session), note)


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """The properties a new session gets: UTC, ``SPARK_DEFAULTS``, a local master's shuffle partitions,
    then the config's ``conf`` (which wins)."""
    given = {key: _spark_value(value) for key, value in settings.conf.items()}
    return {"spark.sql.session.timeZone": "UTC", **SPARK_DEFAULTS, **_local_defaults(settings.master), **given}


def _local_defaults(master: str) -> dict[str, str]:
    """For ``local[N]``: a few shuffle partitions per core instead of Spark's 200, each of which costs a
    task per shuffle on a machine that runs N at a time (on a cluster Spark's own default is kept)."""
    match = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master.strip())
    if match is None:
        return {}
    threads = match.group(1)
    cores = 1 if threads is None else (os.cpu_count() or 1) if threads == "*" else int(threads)
    return {"spark.sql.shuffle.partitions": str(4 * cores)}


def _spark_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def spark_session(con: ibis.BaseBackend) -> SparkSession:
    """The SparkSession behind an Ibis pyspark backend (Ibis keeps it as ``_session``)."""
    return con._session  # noqa: SLF001 - Ibis offers no public accessor


def engine_uri(location: Location, backend: str) -> str:
    """How ``backend`` (an Ibis backend name) is to be given ``location``: local paths absolute, URIs as
    written for Spark; DuckDB reads ``file://`` as a path and Hadoop's ``s3a://`` as ``s3://``."""
    if not is_uri(location.uri) or (backend == "duckdb" and location.local):
        return location.path
    scheme, rest = location.uri.split("://", 1)
    if backend == "duckdb" and scheme.lower() in ("s3a", "s3n"):
        return f"s3://{rest}"
    return location.uri
