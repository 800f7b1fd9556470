"""Hostile files (issue 10): each bad file stops with a one-line DataError naming it and what to do, and
Hive-partitioned directories are read. Every test builds its bad file itself."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.hostile import LOG_NAME, VIDEOS_NAME, kuairand_config, kuairand_frames
from tests.tinylog import ITEMS, events_frame, tiny_config_dict, write_tiny_log
from twotower.config import parse_config
from twotower.data.engine import connect
from twotower.data.funnel import Funnel
from twotower.data.prepare import load_events, prepare_experiment
from twotower.data.validate import DataError


def _generic(path, **data) -> dict:
    raw = tiny_config_dict(path, "unused")
    raw["data"] = {"adapter": "generic", "path": str(path), "timezone": "Asia/Shanghai", **data}
    return raw


def _load(raw: dict):
    funnel = Funnel()
    events, source = load_events(connect(), parse_config(raw), funnel)
    return events, funnel


def _error(raw: dict) -> str:
    with pytest.raises(DataError) as err:
        _load(raw)
    message = str(err.value)
    assert "\n" not in message
    return message


def _parquet_bytes(tmp_path) -> bytes:
    events_frame().to_parquet(tmp_path / "whole.parquet", index=False)
    return (tmp_path / "whole.parquet").read_bytes()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda b: b"", r"bad.parquet: is empty \(0 bytes\); it is truncated or not Parquet"),
        (lambda b: b[: len(b) // 2], r"bad.parquet: is not a readable Parquet file \(.*\); it is truncated or not Parquet"),
        (lambda b: b"user_id,item_id\n1,2\n", r"bad.parquet: is not a readable Parquet file"),
    ],
    ids=["0 bytes", "truncated", "csv named parquet"],
)
def test_unreadable_parquet_names_the_file(tmp_path, content, expected):
    (tmp_path / "bad.parquet").write_bytes(content(_parquet_bytes(tmp_path)))
    assert re.search(expected, _error(_generic(tmp_path / "bad.parquet")))
    # the same file in a directory of good ones, and as the items table
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "part-0.parquet").write_bytes(_parquet_bytes(tmp_path))
    (tmp_path / "dir" / "part-1.parquet").write_bytes((tmp_path / "bad.parquet").read_bytes())
    assert "part-1.parquet: is " in _error(_generic(tmp_path / "dir"))
    assert "bad.parquet: is " in _error(_generic(tmp_path / "whole.parquet", items_path=str(tmp_path / "bad.parquet")))


def test_empty_directory(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "_SUCCESS").write_text("")  # what Spark leaves beside its files: not data
    assert "events: no .parquet or .csv files in this directory (or in Hive partition folders" in _error(_generic(tmp_path / "events"))


def test_hive_partitioned_directory_is_read(tmp_path):
    frame = events_frame()
    day = frame.timestamp.str[:10]
    for value in sorted(set(day)):
        part = tmp_path / "events" / f"dt={value}"
        part.mkdir(parents=True)
        frame[day == value].to_parquet(part / "part-0.parquet", index=False)
    (tmp_path / "events" / "_SUCCESS").write_text("")
    events, funnel = _load(_generic(tmp_path / "events"))
    reference, reference_funnel = _load(_generic(write_tiny_log(tmp_path / "one")[0]))
    assert funnel.steps[0].rows == 36 and funnel.drops == reference_funnel.drops
    columns = ["user_id", "item_id", "ts_ms", "watch_ms", "label", "day_n"]
    assert events.order_by(columns).select(columns).execute().equals(reference.order_by(columns).select(columns).execute())


def test_directory_files_with_different_columns_name_both_files(tmp_path):
    frame = events_frame()
    (tmp_path / "events").mkdir()
    frame.iloc[:10].to_parquet(tmp_path / "events" / "part-0.parquet", index=False)
    frame.iloc[10:].drop(columns=["like"]).to_parquet(tmp_path / "events" / "part-1.parquet", index=False)
    message = _error(_generic(tmp_path / "events"))
    assert "part-1.parquet: column 'like' is missing here but present in " in message and "part-0.parquet" in message
    frame.iloc[10:].astype({"watch_seconds": "float32"}).to_parquet(tmp_path / "events" / "part-1.parquet", index=False)
    message = _error(_generic(tmp_path / "events"))
    assert "part-1.parquet: column 'watch_seconds' has type float here but double in " in message and "part-0.parquet" in message
    # CSV directories compare headers
    (tmp_path / "csv").mkdir()
    frame.iloc[:10].to_csv(tmp_path / "csv" / "a.csv", index=False)
    frame.iloc[10:].rename(columns={"share": "shared"}).to_csv(tmp_path / "csv" / "b.csv", index=False)
    assert "b.csv: column 'share' is missing here but present in " in _error(_generic(tmp_path / "csv"))


def test_csv_directory_skips_empty_part_files(tmp_path):
    frame = events_frame()
    (tmp_path / "csv").mkdir()
    frame.iloc[:10].to_csv(tmp_path / "csv" / "part-0.csv", index=False)
    frame.iloc[10:].to_csv(tmp_path / "csv" / "part-1.csv", index=False)
    frame.iloc[:0].to_csv(tmp_path / "csv" / "part-2.csv", index=False)  # header only: no rows to lose
    (tmp_path / "csv" / "part-3.csv").write_text("")
    _, funnel = _load(_generic(tmp_path / "csv"))
    assert funnel.steps[0].rows == 36


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"watch_seconds": "play_s"}, r"events.parquet: \[data.columns\] maps 'watch_seconds' to 'play_s', but the file has no column 'play_s' \(found: user_id, "),
        ({"watched": "watch_seconds"}, r"\[data.columns\] key 'watched' is not a column of the generic layout; the keys are: user_id, "),
        ({"user_id": "item_id"}, r"maps 'user_id' to 'item_id', but the file also has a column 'user_id'"),
    ],
)
def test_column_mapping_errors(tmp_path, columns, expected):
    events, _ = write_tiny_log(tmp_path)
    assert re.search(expected, _error(_generic(events, columns=columns)))


@pytest.mark.parametrize("key", ["items_path", "users_path"])
def test_missing_items_or_users_file(tmp_path, key):
    events, _ = write_tiny_log(tmp_path)
    message = _error(_generic(events, **{key: str(tmp_path / "nowhere.parquet")}))
    assert message.endswith(f"nowhere.parquet (data.{key}) does not exist; fix data.{key} in the config or remove it")


def test_files_without_rows(tmp_path):
    (tmp_path / "header.csv").write_text("user_id,item_id,timestamp,watch_seconds,duration_seconds\n")
    assert _error(_generic(tmp_path / "header.csv")).endswith("header.csv: no rows: the file has a header but no rows")
    (tmp_path / "zero.csv").write_text("")
    assert _error(_generic(tmp_path / "zero.csv")).endswith("zero.csv: no rows: the file is empty (0 bytes)")
    events_frame().iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    assert _error(_generic(tmp_path / "empty.parquet")).endswith("empty.parquet: no rows (the Parquet data has columns but no rows)")
    write_tiny_log(tmp_path / "ok")
    ITEMS.iloc[:0].to_parquet(tmp_path / "items.parquet", index=False)
    assert "items.parquet: no rows" in _error(_generic(tmp_path / "ok" / "events.parquet", items_path=str(tmp_path / "items.parquet")))


def test_unsupported_file_type(tmp_path):
    (tmp_path / "events.json").write_text("{}")
    assert "events.json: unsupported file type '.json' (expected .parquet or .csv)" in _error(_generic(tmp_path / "events.json"))


def test_kuairand_directory_without_video_features(tmp_path):
    log, videos = kuairand_frames(events_frame())
    log.to_csv(tmp_path / LOG_NAME, index=False)
    raw = kuairand_config(tmp_path, tiny_config_dict("e", "i"))
    message = _error(raw)
    assert "no video_features_basic_*.csv (video_features_basic_pure.csv in KuaiRand-Pure): it holds each video's author" in message
    videos.to_csv(tmp_path / VIDEOS_NAME, index=False)
    _, funnel = _load(raw)
    assert funnel.steps[0].rows == 36


def test_kuairand_header_only_log(tmp_path):
    log, videos = kuairand_frames(events_frame())
    log.iloc[:0].to_csv(tmp_path / LOG_NAME, index=False)
    videos.to_csv(tmp_path / VIDEOS_NAME, index=False)
    assert _error(kuairand_config(tmp_path, tiny_config_dict("e", "i"))).endswith(f"{LOG_NAME}: no rows: the file has a header but no rows")


def test_every_row_invalid_says_why(tmp_path):
    frame = events_frame().assign(duration_seconds=0.0)
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    assert _error(_generic(tmp_path / "events.parquet")) == "no valid events: every one of the 36 rows was dropped (duration <= 0 or missing: 36)"


def test_pipeline_checks_paths_before_work(tmp_path):
    from twotower.data.ingest import check_data_path

    events, items = write_tiny_log(tmp_path)
    cfg = parse_config({**tiny_config_dict(events, items), "data": {"adapter": "generic", "path": str(events), "users_path": str(tmp_path / "u.parquet")}})
    with pytest.raises(DataError, match=r"u.parquet \(data.users_path\) does not exist"):
        check_data_path(cfg.data)


def test_prepare_on_a_hive_directory_matches_the_single_file(tmp_path):
    frame = events_frame()
    for i, part in enumerate((frame.iloc[:20], frame.iloc[20:])):
        directory = tmp_path / "events" / f"part={i}"
        directory.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), directory / "data.parquet")
    events, items = write_tiny_log(tmp_path / "one")
    raw = tiny_config_dict(events, items)
    one = prepare_experiment(parse_config(raw), parse_config(raw).experiments[0], tmp_path / "o1", progress=False)
    raw["data"]["path"] = str(tmp_path / "events")
    hive = prepare_experiment(parse_config(raw), parse_config(raw).experiments[0], tmp_path / "o2", progress=False)
    assert hive.funnel.steps == one.funnel.steps
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o2" / "eval.parquet"), pd.read_parquet(tmp_path / "o1" / "eval.parquet"))
