"""The same relational code on Apache Spark gives the same prepared data as on DuckDB (tiny log).

Skipped when pyspark (the `spark` extra) is not installed. Sampling hashes rows with the engine's own hash
function, so which negatives are sampled may differ between engines; everything else must match.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.config import parse_config
from twotower.data.prepare import prepare_experiment

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime on PATH")


@pytest.fixture(scope="module")
def spark_session():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


def _prepare(tmp_path, engine: str) -> tuple[dict[str, pd.DataFrame], dict]:
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items)
    raw["data"]["engine"] = engine
    cfg = parse_config(raw)
    result = prepare_experiment(cfg, cfg.experiments[0], tmp_path / engine, progress=False)
    read = {name: pd.read_parquet(tmp_path / engine / f"{name}.parquet") for name in ("train", "eval", "history", "items")}
    return read, result.funnel.as_dict()


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = frame.assign(day=frame.day.astype(str).str[:10]) if "day" in frame else frame
    return frame.sort_values(keys).reset_index(drop=True)[sorted(frame.columns)]


def test_spark_matches_duckdb(tmp_path, spark_session):
    duck, duck_funnel = _prepare(tmp_path, "duckdb")
    spark, spark_funnel = _prepare(tmp_path, "spark")
    assert spark_funnel["steps"] == duck_funnel["steps"]
    assert spark_funnel["drops"] == duck_funnel["drops"]
    pd.testing.assert_frame_equal(_sorted(spark["eval"], ["user_id", "item_id"]), _sorted(duck["eval"], ["user_id", "item_id"]), check_dtype=False)
    pd.testing.assert_frame_equal(_sorted(spark["items"], ["item_id"]), _sorted(duck["items"], ["item_id"]), check_dtype=False)
    # the evaluation day's snapshots depend on no sampling: they must be identical
    val_hist = [_sorted(h, ["user_id", "day"]).query("day == '2022-05-04'") for h in (spark["history"], duck["history"])]
    assert len(val_hist[1]) == 3  # users 1 and 5 (evaluation set) and 2 (a completed play: catalog retrieval)
    for kind in ("pos_items", "neg_items"):
        assert [list(v) for v in val_hist[0][kind]] == [list(v) for v in val_hist[1][kind]]
    assert sorted(spark["train"].label) == sorted(duck["train"].label)


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
