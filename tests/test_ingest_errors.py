"""Bad input stops with a message naming the file and the column; invalid rows are dropped and counted."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.tinylog import events_frame, tiny_config_dict, write_tiny_log
from twotower.config import parse_config
from twotower.data.engine import connect
from twotower.data.funnel import Funnel
from twotower.data.prepare import load_events, prepare_experiment
from twotower.data.validate import DataError


def _load(tmp_path, frame: pd.DataFrame, name: str = "events.parquet", **data):
    path = tmp_path / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path, index=False)
    raw = tiny_config_dict(path, tmp_path / "unused")
    raw["data"] = {"adapter": "generic", "path": str(path), **data}
    funnel = Funnel()
    events, _ = load_events(connect(), parse_config(raw), funnel)
    return events, funnel, path


def test_missing_column_names_file_and_column(tmp_path):
    with pytest.raises(DataError) as err:
        _load(tmp_path, events_frame().drop(columns=["watch_seconds"]))
    assert "events.parquet" in str(err.value) and "missing column(s) watch_seconds" in str(err.value)


def test_wrong_type_names_file_and_column(tmp_path):
    frame = events_frame().assign(user_id=lambda f: "u" + f.user_id.astype(str))
    with pytest.raises(DataError, match=r"events.parquet: column 'user_id' has type string, expected integer"):
        _load(tmp_path, frame)


def test_unparsable_timestamp(tmp_path):
    frame = events_frame()
    frame.loc[3, "timestamp"] = "yesterday at noon"
    with pytest.raises(DataError, match=r"events.csv: column 'timestamp' has 1 value\(s\) that are not a UTC timestamp \(ISO-8601"):
        _load(tmp_path, frame, name="events.csv")


def test_invalid_rows_are_dropped_and_counted(tmp_path):
    frame = events_frame()
    frame.loc[0, "watch_seconds"] = -1.0
    frame.loc[1, "duration_seconds"] = 0.0
    frame.loc[2, "duration_seconds"] = -5.0
    events, funnel, _ = _load(tmp_path, frame)
    assert {reason: count for reason, count in funnel.drops.items() if count} == {
        "duration <= 0 or missing": 3,  # two above plus the log's own zero-duration row
        "watch time < 0 or missing": 1,
        "exact duplicate": 1,
    }
    assert events.count().execute() == len(frame) - 5
    assert not events.fraction_watch.isinf().any().execute()


def test_column_mapping_for_a_teams_own_names(tmp_path):
    frame = events_frame().rename(columns={"user_id": "uid", "watch_seconds": "play_s"})
    events, _, _ = _load(tmp_path, frame, columns={"user_id": "uid", "watch_seconds": "play_s"})
    assert events.count().execute() == len(frame) - 2


def test_kuairand_errors(tmp_path):
    raw = tiny_config_dict(tmp_path, tmp_path)
    raw["data"] = {"adapter": "kuairand", "path": str(tmp_path / "nowhere")}
    cfg = parse_config(raw)
    with pytest.raises(DataError, match="does not exist. Get KuaiRand-Pure from"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out1", progress=False)
    raw["data"]["path"] = str(tmp_path)
    cfg = parse_config(raw)
    with pytest.raises(DataError, match="no log_standard_\\*.csv file"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out2", progress=False)
    log = pd.DataFrame({"user_id": [1], "video_id": [2], "time_ms": [0], "play_time_ms": [1], "duration_ms": ["ten"],
                        "is_like": [0], "is_forward": [0], "is_follow": [0], "is_comment": [0]})
    log.to_csv(tmp_path / "log_standard_x.csv", index=False)
    with pytest.raises(DataError, match=r"log_standard_x.csv: column 'duration_ms' has type string, expected number"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out3", progress=False)
    log.drop(columns=["is_like"]).to_csv(tmp_path / "log_standard_x.csv", index=False)
    with pytest.raises(DataError, match=r"log_standard_x.csv: missing column\(s\) is_like"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out4", progress=False)


def test_items_table_wrong_type(tmp_path):
    events, _ = write_tiny_log(tmp_path)
    items = tmp_path / "bad_items.parquet"
    pd.DataFrame({"item_id": [10], "creator_id": ["alice"]}).to_parquet(items)
    cfg = parse_config(tiny_config_dict(events, items))
    with pytest.raises(DataError, match=r"bad_items.parquet: column 'creator_id' has type string, expected integer"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)


@pytest.mark.parametrize("kind", ["timestamp", "iso string", "epoch ms"])
def test_timestamps_keep_their_milliseconds(tmp_path, kind):
    frame = events_frame().iloc[:3].copy()
    stamps = pd.to_datetime(["2022-05-01T15:59:59.600Z", "2022-05-01T16:00:00.400Z", "2022-05-01T08:00:00.999+08:00"], format="ISO8601", utc=True)
    if kind == "timestamp":
        frame["timestamp"] = stamps
    elif kind == "iso string":
        frame["timestamp"] = ["2022-05-01T15:59:59.600Z", "2022-05-01T16:00:00.400Z", "2022-05-01T08:00:00.999+08:00"]
    else:
        frame["timestamp"] = stamps.as_unit("ms").astype("int64")
    events, _, _ = _load(tmp_path, frame, timezone="Asia/Shanghai")
    out = events.order_by("ts_ms").execute()
    assert out.ts_ms.tolist() == [1651363200999, 1651420799600, 1651420800400]
    # 15:59:59.600 UTC is 23:59:59.6 on May 1st in Shanghai; 16:00:00.400 UTC is already May 2nd
    days = dict(zip(out.ts_ms, out.day_n, strict=True))
    assert days[1651420799600] + 1 == days[1651420800400]


def test_user_categorical_columns_become_codes(tmp_path):
    """data.user_categorical_columns: those columns are read as codes (cat_*), the others as numbers."""
    import pandas as pd

    from tests.tinylog import tiny_config_dict, write_tiny_log
    from twotower.config import parse_config
    from twotower.data.ingest import read_source

    events, items = write_tiny_log(tmp_path / "data")
    users = tmp_path / "data" / "users.csv"
    pd.DataFrame({"user_id": [1, 2], "segment": [3, -124], "followers": [10, 2000]}).to_csv(users, index=False)
    raw = tiny_config_dict(events, items)
    raw["data"] |= {"users_path": str(users), "user_categorical_columns": ["segment"]}
    source = read_source(connect(), parse_config(raw).data)
    table = source.users.to_pandas().sort_values("user_id")
    assert list(table.columns) == ["user_id", "static_followers", "cat_segment"]
    assert table["cat_segment"].tolist() == ["3", "-124"] and table["static_followers"].tolist() == [10.0, 2000.0]
    raw["data"]["user_categorical_columns"] = ["segmnt"]
    with pytest.raises(DataError, match="user_categorical_columns names column\\(s\\) segmnt"):
        read_source(connect(), parse_config(raw).data)
