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
