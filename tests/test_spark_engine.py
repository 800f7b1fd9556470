"""The same relational code on Apache Spark gives the same prepared data as on DuckDB (issue 13).

Every prepared table must be equal on both engines: the same columns, the same Arrow types and the same rows
(floats to 1e-9), on the hand-built log and on three days of the KuaiRand-Pure slice (read and written by
Spark through file:// URIs, partitioned by day). Sampling decides each row by the project's own hash, so both
engines keep the same rows. Skipped without pyspark (the `spark` extra) or Java; the KuaiRand test without
../shared/data. One local session for the module (starting one costs seconds).
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from tests import kuairand_cut
from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.config import ExperimentConfig, load_config, parse_config
from twotower.data.outdir import OUTPUTS
from twotower.data.parity import compare_prepared
from twotower.data.prepare import prepare_experiment

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime on PATH (none found)")


@pytest.fixture(scope="module")
def spark_session():
    from pyspark.sql import SparkSession

    # Small data: two shuffle partitions and no adaptive re-planning keep the number of Spark jobs (each a
    # fixed cost) low; the results do not depend on these settings.
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_matches_duckdb(tmp_path, spark_session):
    events, items = write_tiny_log(tmp_path / "data")
    funnels = {}
    for engine in ("duckdb", "spark"):
        raw = tiny_config_dict(events, items)
        raw["data"]["engine"] = engine
        cfg = parse_config(raw)
        funnels[engine] = prepare_experiment(cfg, cfg.experiments[0], tmp_path / engine, progress=False).funnel
    parity = compare_prepared(tmp_path / "duckdb", tmp_path / "spark")
    assert parity.same, parity.differences
    assert set(parity.rows) == set(OUTPUTS) - {"users"}  # every table (the tiny log has no users table)
    assert parity.rows["history"] >= 3 and parity.rows["train"] > 0
    # the test's session was used as it is, and the funnel says so
    assert funnels["spark"].notes["engine"].endswith("the active session (master local[2]) as it is; [data.spark] was not applied")


@pytest.mark.skipif(not kuairand_cut.available(), reason=f"KuaiRand-Pure slice not found at {kuairand_cut.KUAIRAND}")
def test_kuairand_days_prepare_the_same_on_spark_through_uris(tmp_path, spark_session, monkeypatch):
    """Three days of the real log: DuckDB from a plain path into single files; Spark from a file:// URI
    into a file:// URI, partitioned by day. Every table the same, types included; and no query Spark
    writes a table with moves it into a single partition (no global window, sort or collection in one
    task; the per-item and per-user tables are then written as one file each)."""
    from twotower.data import outdir
    from twotower.data.engine import spark_session as session_of

    plans, write = {}, outdir._spark_write

    def planned(con, table, target, *args):
        plans[target.name.split(".")[1]] = session_of(con).sql(con.compile(table))._jdf.queryExecution().executedPlan().toString()
        return write(con, table, target, *args)

    monkeypatch.setattr(outdir, "_spark_write", planned)
    data = kuairand_cut.write_cut(tmp_path / "kuairand", dt.date(2022, 4, 29), dt.date(2022, 5, 1))
    window = ExperimentConfig(id=1, train_start="2022-04-29", train_end="2022-04-30", val_date="2022-05-01")
    duck = load_config(kuairand_cut.CONFIG, data_path=data)
    prepare_experiment(duck, window, tmp_path / "duckdb", progress=False)
    spark = load_config(kuairand_cut.CONFIG, data_path=f"file://{data}", overrides=['data.engine="spark"', "data.partition_by_day=true"])
    prepare_experiment(spark, window, f"file://{tmp_path}/spark", progress=False)
    days = sorted(p.name for p in (tmp_path / "spark" / "train.parquet").iterdir() if not p.name.startswith(("_", ".")))
    assert days == ["day=2022-04-29", "day=2022-04-30"]  # Spark's _SUCCESS markers aside
    # tables without a day: parts written in parallel (seen), one file for the per-item/user tables
    assert (tmp_path / "spark" / "seen.parquet").is_dir() and (tmp_path / "spark" / "items.parquet").is_file()
    parity = compare_prepared(tmp_path / "duckdb", tmp_path / "spark", ignore_notes=("engine", "step_seconds", "sources"))
    assert parity.same, parity.differences
    assert set(parity.rows) == set(OUTPUTS)
    assert parity.rows["train"] > 4000 and parity.rows["eval"] > 5000 and parity.rows["users"] == 27285
    assert sorted(plans) == sorted(OUTPUTS)
    for name, plan in plans.items():
        assert "SinglePartition" not in plan, name
        windows = [line for line in plan.splitlines() if "Window [" in line]
        assert all(", [user_id#" in line for line in windows), (name, windows)  # partitioned by user (history)


def _funnel(cfg_dict: dict, engine: str) -> dict:
    from twotower.data.engine import connect
    from twotower.data.funnel import Funnel
    from twotower.data.prepare import load_events

    cfg_dict = {**cfg_dict, "data": {**cfg_dict["data"], "engine": engine}}
    funnel = Funnel()
    load_events(connect(engine), parse_config(cfg_dict), funnel)
    return funnel.as_dict()


def test_spark_counts_non_finite_values_like_duckdb(tmp_path, spark_session):
    """Issue 10: NaN/±inf watch times and durations are dropped under their own reasons on Spark too, from
    Parquet (IEEE values) and from CSV text (nan, inf, -Infinity, ...), for both adapters; and a Hive-
    partitioned directory is read."""
    from tests.hostile import (
        LOG_NAME,
        NON_FINITE,
        VIDEOS_NAME,
        kuairand_config,
        kuairand_frames,
        non_finite_text_cells,
        with_non_finite,
        write_csv_text,
        write_parquet_exact,
    )

    frame = with_non_finite()
    first = len(frame) - len(NON_FINITE)
    generic = write_parquet_exact(frame, tmp_path / "events.parquet")
    csv = write_csv_text(frame, tmp_path / "events.csv", non_finite_text_cells(first, "watch_seconds", "duration_seconds"))
    log, videos = kuairand_frames(frame)
    write_csv_text(log, tmp_path / "kr" / LOG_NAME, non_finite_text_cells(first, "play_time_ms", "duration_ms"))
    videos.to_csv(tmp_path / "kr" / VIDEOS_NAME, index=False)
    day = frame.timestamp.str[:10]
    for value in sorted(set(day)):
        write_parquet_exact(frame[day == value], tmp_path / "hive" / f"dt={value}" / "part-0.parquet")
    base = tiny_config_dict("e", "i")
    configs = {
        "parquet": {**base, "data": {"adapter": "generic", "path": str(generic)}},
        "csv": {**base, "data": {"adapter": "generic", "path": str(csv)}},
        "kuairand": kuairand_config(tmp_path / "kr", base),
        "hive": {**base, "data": {"adapter": "generic", "path": str(tmp_path / "hive")}},
    }
    for name, cfg_dict in configs.items():
        spark, duck = _funnel(cfg_dict, "spark"), _funnel(cfg_dict, "duckdb")
        nonzero = {reason: n for reason, n in spark["drops"].items() if n}
        assert nonzero == {"watch time NaN or ±inf": 3, "duration NaN or ±inf": 3, "duration <= 0 or missing": 1, "exact duplicate": 1}, name
        assert spark["drops"] == duck["drops"] and spark["steps"] == duck["steps"], name
