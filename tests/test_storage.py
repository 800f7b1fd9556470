"""Input and output as URIs, and the prepared output partitioned by day (issue 13), on DuckDB and the tiny log.

A ``file://`` URI goes through the same code as ``hdfs://`` or ``s3a://`` (pyarrow's filesystems on the
driver, the URI handed to the engine); the results must equal those of plain paths.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.config import load_config, parse_config
from twotower.config_files import resolve_paths
from twotower.data.outdir import OUTPUTS
from twotower.data.parity import compare_prepared
from twotower.data.prepare import prepare_experiment
from twotower.data.prepared import PreparedTables, read_table
from twotower.data.storage import file_stats, locate
from twotower.data.validate import DataError
from twotower.reuse import link_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    events, items = write_tiny_log(root / "data")
    cfg = parse_config(tiny_config_dict(events, items))
    prepare_experiment(cfg, cfg.experiments[0], root / "plain", progress=False)
    return root, events, items


def test_file_uris_in_and_out_give_the_same_prepared_data(tiny):
    root, events, items = tiny
    raw = tiny_config_dict(f"file://{events}", f"file://{items}")
    cfg = parse_config(raw)
    assert cfg.data.path == f"file://{events}"  # a URI stays a string, never a Path ('file:/...')
    out = f"file://{root}/uri"
    result = prepare_experiment(cfg, cfg.experiments[0], out, progress=False)
    assert result.out_dir == out
    parity = compare_prepared(root / "plain", out, ignore_notes=("engine", "step_seconds", "sources"))
    assert parity.same, parity.differences
    assert set(parity.rows) == set(OUTPUTS) - {"users"} and parity.rows["train"] > 0
    marker = json.loads((root / "uri" / "prepare.json").read_text())
    assert marker["state"] == "completed" and "train.parquet" in marker["files"]
    funnel = json.loads((root / "uri" / "funnel.json").read_text())
    assert funnel["notes"]["sources"] == [f"file://{events}", f"file://{items}"]
    # the same URI a second time: a completed result is never replaced, through the URI too
    with pytest.raises(DataError, match=r"already holds prepared data"):
        prepare_experiment(cfg, cfg.experiments[0], out, progress=False)


def test_a_missing_uri_and_an_unknown_scheme_are_one_line_errors(tiny):
    root, _, items = tiny
    cfg = parse_config(tiny_config_dict(f"file://{root}/nowhere.parquet", f"file://{items}"))
    with pytest.raises(DataError, match=rf"^events file file://{root}/nowhere.parquet does not exist"):
        prepare_experiment(cfg, cfg.experiments[0], root / "missing", progress=False)
    with pytest.raises(DataError, match=r"^nosuch://bucket/x: cannot reach this location from here \(.*\); check the URI"):
        locate("nosuch://bucket/x")


def test_partitioned_by_day_reads_back_as_the_single_files(tiny):
    root, events, items = tiny
    cfg = parse_config(tiny_config_dict(events, items))
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"partition_by_day": True})})
    out = root / "by_day"
    prepare_experiment(cfg, cfg.experiments[0], out, progress=False)
    # Hive folders per day for the tables that have one; one file for the others
    assert sorted(p.name for p in (out / "train.parquet").iterdir()) == ["day=2022-05-01", "day=2022-05-02", "day=2022-05-03"]
    assert [p.name for p in (out / "eval.parquet").iterdir()] == ["day=2022-05-04"]
    assert (out / "history.parquet").is_dir() and (out / "catalog.parquet").is_dir()
    assert all((out / f"{name}.parquet").is_file() for name in ("items", "popularity", "seen", "retrieval_targets"))
    # read back: the same frames as the single files, row order and types included
    for name in ("train", "eval", "history", "catalog", "retrieval_users"):
        pd.testing.assert_frame_equal(read_table(out / f"{name}.parquet"), pd.read_parquet(root / "plain" / f"{name}.parquet"))
    parity = compare_prepared(root / "plain", out)
    assert parity.same, parity.differences
    one_day = [read_table(directory / "catalog.parquet", dt.date(2022, 5, 2)) for directory in (out, root / "plain")]
    pd.testing.assert_frame_equal(*one_day)
    assert sorted(one_day[0].item_id) == [10, 11, 12, 13, 14, 15] and set(one_day[0].day.astype(str)) == {"2022-05-02"}
    tables = PreparedTables.read(out)
    assert str(tables.train.day.dtype) == "datetime64[us]" and len(tables.train) == parity.rows["train"]
    # the run cache links a prepared directory into each run: the day folders come along
    link_files(out, root / "linked")
    assert compare_prepared(out, root / "linked").same


def test_single_file_types(tiny):
    """The types both engines write (DuckDB's SUM would make popularity.positives a HUGEINT -> double)."""
    plain = tiny[0] / "plain"
    schema = pq.read_schema(plain / "popularity.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [("item_id", "int64"), ("plays", "int64"), ("positives", "int64")]
    train = pq.read_schema(plain / "train.parquet")
    assert str(train.field("day").type) == "timestamp[us]" and str(train.field("weight").type) == "double"


def test_uris_are_left_alone_by_config_paths(tmp_path):
    raw = {"data": {"path": "s3a://bucket/logs/", "items_path": "hdfs://nn:8020/items", "users_path": "rel/users.parquet",
                    "duckdb": {"temp_directory": "spill"}}}
    resolve_paths(raw, tmp_path)
    assert raw["data"]["path"] == "s3a://bucket/logs/" and raw["data"]["items_path"] == "hdfs://nn:8020/items"
    assert raw["data"]["users_path"] == str(tmp_path / "rel" / "users.parquet")
    assert raw["data"]["duckdb"]["temp_directory"] == str(tmp_path / "spill")
    config = tmp_path / "c.toml"
    config.write_text(
        'name = "x"\n[data]\nadapter = "generic"\npath = "s3a://bucket/logs/"\n'
        '[[experiments]]\nid = 1\ntrain_start = 2022-05-01\ntrain_end = 2022-05-03\nval_date = 2022-05-04\n'
    )
    assert load_config(config).data.path == "s3a://bucket/logs/"
    assert load_config(config, data_path="hdfs://nn:8020/other").data.path == "hdfs://nn:8020/other"
    assert load_config(config, overrides=['data.path="gs://b/k"']).data.path == "gs://b/k"


def test_file_stats_of_a_uri_equal_those_of_the_path(tiny):
    root = tiny[0] / "data"
    stats = file_stats(f"file://{root}")
    assert [name for name, _, _ in stats] == ["events.parquet", "items.parquet"]
    assert stats == [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.iterdir())]
    assert file_stats(f"file://{root}/none") == [f"file://{root}/none", None]


def test_a_gzip_csv_behind_a_uri_is_read(tmp_path):
    from tests.tinylog import events_frame
    from twotower.data.engine import connect
    from twotower.data.readers import read_table as read_source_table

    frame = events_frame()
    frame.to_csv(tmp_path / "events.csv.gz", index=False)  # pandas compresses by the suffix
    table = read_source_table(connect(), f"file://{tmp_path}/events.csv.gz", "events file")
    assert table.count().execute() == len(frame) and table.schema()["user_id"].is_integer()


def test_the_command_line_takes_uris_for_data_and_out(tiny, tmp_path):
    from typer.testing import CliRunner

    from twotower.cli import app

    root, events, items = tiny
    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\nseed = 7\n[data]\nadapter = "generic"\npath = "nowhere.parquet"\n'
        f'items_path = "file://{items}"\ntimezone = "Asia/Shanghai"\n'
        "[filters.client]\nmin_interactions = 3\nmax_interactions = 5\n[features]\nsmoothing = 5.0\n"
        "[[experiments]]\nid = 1\ntrain_start = 2022-05-01\ntrain_end = 2022-05-03\nval_date = 2022-05-04\n"
    )
    out = f"file://{tmp_path}/out"
    result = CliRunner().invoke(app, ["prepare", str(config), "--data", f"file://{events}", "--out", out])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"wrote {out}/experiment_1")
    parity = compare_prepared(root / "plain", tmp_path / "out" / "experiment_1", ignore_notes=("engine", "step_seconds", "sources"))
    assert parity.same, parity.differences


def test_a_directory_of_parts_reads_as_one_table(tmp_path):
    """Spark writes a table without a day as parts when partitioned output is asked for."""
    import pyarrow as pa

    seen = tmp_path / "seen.parquet"
    seen.mkdir()
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [10, 11]}), seen / "part-00000.parquet")
    pq.write_table(pa.table({"user_id": [2], "item_id": [10]}), seen / "part-00001.parquet")
    (seen / "_SUCCESS").write_bytes(b"")
    frame = read_table(seen)
    assert list(frame.columns) == ["user_id", "item_id"] and frame.values.tolist() == [[1, 10], [1, 11], [2, 10]]
