"""The relational engine: DuckDB (embedded) by default, Apache Spark for data beyond one machine.

All relational steps are Ibis expressions, so the same code runs on either backend.
"""

from __future__ import annotations

import contextlib
import os

import ibis


def connect(engine: str = "duckdb", threads: int | None = None) -> ibis.BaseBackend:
    """An Ibis backend. ``spark`` uses the active SparkSession (or starts a local one)."""
    if engine == "duckdb":
        con = ibis.duckdb.connect(threads=threads or os.cpu_count() or 1)
        # Timestamps without an offset are UTC, whatever the machine's local time zone.
        con.raw_sql("SET TimeZone = 'UTC'")
        # Ibis 12 compiles array lambdas with DuckDB's arrow syntax, which DuckDB 2 disables by default.
        with contextlib.suppress(Exception):  # DuckDB 1.x has no such setting (and needs none)
            con.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
        return con
    if engine == "spark":
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise RuntimeError("engine 'spark' needs the spark extra: pip install 'twotower[spark]'") from exc
        # An existing session (spark-submit, a cluster) is reused as configured; a new local one gets UTC.
        session = SparkSession.builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
        return ibis.pyspark.connect(session)
    raise ValueError(f"unknown engine {engine!r} (expected 'duckdb' or 'spark')")
