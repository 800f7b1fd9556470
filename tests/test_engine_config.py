"""Engine settings from the config (issue 13): DuckDB memory limit, threads and spill directory; Spark
master and properties; what the engine used is stated in words."""

from __future__ import annotations

import pytest

from tests.tinylog import tiny_config_dict
from twotower.config import ConfigError, DataConfig, DuckDBSettings, SparkSettings, parse_config
from twotower.data.engine import open_engine, spark_conf


def test_duckdb_settings_are_applied_and_stated(tmp_path):
    data = DataConfig(path=".", duckdb=DuckDBSettings(memory_limit="1GB", threads=1, temp_directory=tmp_path / "spill"))
    engine = open_engine(data)
    limit, threads, spill = engine.con.raw_sql(
        "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')"
    ).fetchall()[0]
    assert (limit, threads, spill) == ("953.6 MiB", 1, str(tmp_path / "spill"))  # DuckDB states 1 GB in MiB
    assert engine.note.startswith("duckdb v") and engine.note.endswith(f": 1 threads, memory limit 953.6 MiB, spills to {tmp_path / 'spill'}")


def test_engine_settings_in_the_config_file(tmp_path):
    data = {"adapter": "generic", "path": "e", "engine": "spark", "duckdb": {"memory_limit": "16GB", "temp_directory": "spill"},
            "spark": {"master": "yarn", "conf": {"spark.driver.memory": "4g", "spark.sql.adaptive.enabled": False, "spark.executor.cores": 4}}}
    cfg = parse_config(tiny_config_dict("e", "i", data=data), base=tmp_path)
    assert cfg.data.duckdb.temp_directory == tmp_path / "spill"  # relative to the config file
    conf = spark_conf(cfg.data.spark)
    # the config wins over the defaults; values as Spark writes them; no local shuffle size on a cluster
    assert conf["spark.sql.adaptive.enabled"] == "false" and conf["spark.executor.cores"] == "4"
    assert conf["spark.driver.memory"] == "4g" and conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in conf
    assert spark_conf(SparkSettings())["spark.sql.shuffle.partitions"] == "8"  # local[2]: 4 per core
    assert spark_conf(SparkSettings(master="local[3]", conf={"spark.sql.shuffle.partitions": 2}))["spark.sql.shuffle.partitions"] == "2"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"duckdb": {"memory_limit": "lots"}}, r"memory_limit 'lots' is not a size such as \"16GB\""),
        ({"duckdb": {"threads": 0}}, r"data.duckdb.threads"),
        ({"spark": {"conf": {"driver.memory": "4g"}}}, r"driver.memory: Spark properties start with 'spark.'"),
        ({"spark": {"conf": {"spark.master": "yarn"}}}, r"set the master with data.spark.master"),
        ({"spark": {"masters": "yarn"}}, r"unknown key 'data.spark.masters'"),
    ],
)
def test_bad_engine_settings_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny_config_dict("e", "i", data={"adapter": "generic", "path": "e", **data}))


def test_spark_csv_guesses_map_onto_duckdbs_types():
    types = pytest.importorskip("pyspark.sql.types", reason="the spark extra is not installed")
    from twotower.data.readers import _spark_type

    def mapped(guess, name="c", declared=None):
        return _spark_type(types.StructField(name, guess), declared or {})

    assert mapped(types.IntegerType()) == types.LongType() and mapped(types.ShortType()) == types.LongType()
    assert mapped(types.DecimalType(20, 0)) == types.DecimalType(20, 0)  # beyond int64: reported by as_int64
    assert mapped(types.DecimalType(10, 2)) == types.DoubleType() and mapped(types.FloatType()) == types.DoubleType()
    for text in (types.DateType(), types.TimestampType(), types.BooleanType(), types.StringType()):
        assert mapped(text) == types.StringType()  # DuckDB is given no date, time or boolean candidate
    assert mapped(types.IntegerType(), "tag", {"tag": "string"}) == types.StringType()
