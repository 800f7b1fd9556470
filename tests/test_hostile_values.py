"""Hostile values (issue 10): each bad value ends as a counted drop, a one-line error or a correct result.

Each test plants its bad rows into the hand-built log of tinylog.py and compares with the clean log's
results, which the planted rows must not change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
from tests.tinylog import ITEMS, events_frame, tiny_config_dict, write_tiny_log
from twotower.config import ConfigError, parse_config
from twotower.data.clean import day_number
from twotower.data.engine import connect
from twotower.data.funnel import Funnel
from twotower.data.prepare import load_events, prepare_experiment
from twotower.data.validate import DataError

NON_FINITE_DROPS = {"watch time NaN or ±inf": 3, "duration NaN or ±inf": 3}
TINY_DROPS = {"duration <= 0 or missing": 1, "exact duplicate": 1}


def _prepare(cfg_dict: dict, out) -> tuple[dict[str, pd.DataFrame], Funnel]:
    cfg = parse_config(cfg_dict)
    result = prepare_experiment(cfg, cfg.experiments[0], out, progress=False)
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "eval", "history")}, result.funnel


def _nonzero(drops: dict[str, int]) -> dict[str, int]:
    return {reason: count for reason, count in drops.items() if count}


def _raw_rows(funnel: Funnel) -> int:
    return funnel.steps[0].rows


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    events, items = write_tiny_log(root / "data")
    frames, funnel = _prepare(tiny_config_dict(events, items), root / "out")
    return frames, funnel, items


def _assert_same_results(frames, clean_frames) -> None:
    for name in ("train", "eval", "history"):
        pd.testing.assert_frame_equal(frames[name], clean_frames[name])


def _assert_non_finite_counted(funnel: Funnel) -> None:
    assert _nonzero(funnel.drops) == {**NON_FINITE_DROPS, **TINY_DROPS}
    steps = {s.step.split(" (")[0]: s.rows for s in funnel.steps}
    assert steps["raw"] == 36 + 6 == steps["cleaned"] + sum(funnel.drops.values())


def test_non_finite_parquet_values_are_dropped_and_counted(tmp_path, clean):
    path = write_parquet_exact(with_non_finite(), tmp_path / "events.parquet")
    assert pq.read_table(path).column("watch_seconds").null_count == 0  # real IEEE NaN, not nulls
    frames, funnel = _prepare(tiny_config_dict(path, clean[2]), tmp_path / "out")
    _assert_non_finite_counted(funnel)
    _assert_same_results(frames, clean[0])  # user 5's mean watch time stays 10 s, not inf
    assert frames["eval"].set_index(["user_id", "item_id"]).loc[(5, 10)].user_mean_watch_s == 10.0


@pytest.mark.parametrize("column", ["watch_seconds", "duration_seconds"])
def test_nan_in_a_parquet_column_without_inf_is_dropped(tmp_path, clean, column):
    """A NaN in an otherwise finite, varied Parquet column: its min/max statistics ignore NaN, and DuckDB
    folded isnan() to false from them (the NaN row was kept and labelled positive)."""
    frame = with_non_finite(events_frame()).iloc[: len(events_frame()) + 1]  # the tiny log + one NaN watch
    if column == "duration_seconds":
        frame = frame.assign(watch_seconds=frame.watch_seconds.fillna(10.0))
        frame.loc[frame.index[-1], "duration_seconds"] = np.nan
    path = write_parquet_exact(frame, tmp_path / "events.parquet")
    stats = pq.ParquetFile(path).metadata.row_group(0).column(list(frame.columns).index(column)).statistics
    assert np.isfinite([stats.min, stats.max]).all() and stats.min < stats.max  # the case DuckDB folded
    frames, funnel = _prepare(tiny_config_dict(path, clean[2]), tmp_path / "out")
    reason = "watch time NaN or ±inf" if column == "watch_seconds" else "duration NaN or ±inf"
    assert _nonzero(funnel.drops) == {reason: 1, **TINY_DROPS}
    _assert_same_results(frames, clean[0])


def test_non_finite_csv_strings_are_dropped_and_counted(tmp_path, clean):
    frame = with_non_finite()
    cells = non_finite_text_cells(len(frame) - len(NON_FINITE), "watch_seconds", "duration_seconds")
    path = write_csv_text(frame, tmp_path / "events.csv", cells)
    assert "-Infinity" in path.read_text() and ",nan," in path.read_text()
    frames, funnel = _prepare(tiny_config_dict(path, clean[2]), tmp_path / "out")
    _assert_non_finite_counted(funnel)
    _assert_same_results(frames, clean[0])


def test_non_finite_kuairand_strings_are_dropped_and_counted(tmp_path, clean):
    log, videos = kuairand_frames(with_non_finite())
    cells = non_finite_text_cells(len(log) - len(NON_FINITE), "play_time_ms", "duration_ms")
    write_csv_text(log, tmp_path / "kr" / LOG_NAME, cells)
    videos.to_csv(tmp_path / "kr" / VIDEOS_NAME, index=False)
    # no data.timezone: the kuairand default is Asia/Shanghai, the tiny log's own zone
    frames, funnel = _prepare(kuairand_config(tmp_path / "kr", tiny_config_dict("e", "i")), tmp_path / "out")
    _assert_non_finite_counted(funnel)
    _assert_same_results(frames, clean[0])
    assert funnel.notes["time zone"].startswith("Asia/Shanghai (the kuairand adapter's default")


def test_huge_finite_values_are_dropped_and_counted(tmp_path):
    frame = events_frame()
    frame.loc[0, "watch_seconds"] = 1e300  # finite, but a sum of two would overflow to inf
    frame.loc[1, "duration_seconds"] = 1e-320  # positive, but 10 s / this overflows to inf
    events, funnel = _load(tmp_path, frame)
    assert funnel.drops["watch time or duration above 1e+12 ms, or duration below 0.001 ms"] == 2
    assert events.count().execute() == 34 - 2
    assert not events.fraction_watch.isinf().any().execute()


def _load(tmp_path, frame: pd.DataFrame, name: str = "events.parquet", **data):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        write_parquet_exact(frame, path)
    raw = tiny_config_dict(path, tmp_path / "unused")
    raw["data"] = {"adapter": "generic", "path": str(path), **data}
    funnel = Funnel()
    events, _ = load_events(connect(), parse_config(raw), funnel)
    return events, funnel


def test_timestamps_outside_1970_to_2100_are_dropped_and_counted(tmp_path):
    frame = events_frame()
    frame.loc[0, "timestamp"] = "1969-12-31T23:59:59Z"
    frame.loc[1, "timestamp"] = "2100-01-01T00:00:00Z"
    frame.loc[2, "timestamp"] = None  # a missing timestamp is dropped too (it used to be an error)
    _, funnel = _load(tmp_path, frame)
    assert _nonzero(funnel.drops) == {
        "timestamp before 1970-01-01 or from 2100-01-01 on (UTC)": 2,
        "missing user_id, item_id or timestamp": 1,
        **TINY_DROPS,
    }


def test_missing_flag_values_are_dropped_and_counted(tmp_path):
    frame = events_frame().astype({"like": "Int64"})
    frame.loc[4, "like"] = None
    _, funnel = _load(tmp_path, frame)
    assert funnel.drops["missing like, share, follow or comment flag"] == 1


@pytest.mark.parametrize(
    ("label", "weight", "flag"),
    [({"or_events": ["share"]}, None, "share"), ({"fraction_watch_above": 0.9}, {"mode": "events"}, "like")],
)
def test_a_flag_the_data_lacks_is_an_error(tmp_path, label, weight, flag):
    events, items = write_tiny_log(tmp_path)
    frame = events_frame().drop(columns=[flag])
    frame.to_parquet(events, index=False)
    raw = tiny_config_dict(events, items, label=label, **({"sample_weight": weight} if weight else {}))
    cfg = parse_config(raw)
    with pytest.raises(DataError, match=rf"events.parquet: no column for event flag\(s\) {flag}, .*\[data.columns\] \({flag} = "):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)


def test_identical_duplicate_items_are_removed_and_counted(tmp_path, clean):
    events, _ = write_tiny_log(tmp_path / "data")
    items = tmp_path / "items.parquet"
    pd.concat([ITEMS, ITEMS.iloc[[2, 2]]]).to_parquet(items, index=False)  # item 12 three times
    frames, funnel = _prepare(tiny_config_dict(events, items), tmp_path / "out")
    assert funnel.notes["items: repeated identical rows removed"] == 2
    _assert_same_results(frames, clean[0])
    assert pd.read_parquet(tmp_path / "out" / "items.parquet").item_id.tolist() == [10, 11, 12, 13, 14, 15]


def test_conflicting_duplicate_items_are_an_error(tmp_path):
    events, _ = write_tiny_log(tmp_path / "data")
    items = tmp_path / "items.parquet"
    pd.concat([ITEMS, ITEMS.iloc[[2, 4]].assign(creator_id=999)]).to_parquet(items, index=False)
    cfg = parse_config(tiny_config_dict(events, items))
    with pytest.raises(DataError, match=r"items.parquet: 2 item_id\(s\) appear in several rows with different values \(e.g. 12, 14\)"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # a failed prepare leaves nothing behind


def test_conflicting_duplicate_kuairand_videos_are_an_error(tmp_path):
    log, videos = kuairand_frames(events_frame())
    (tmp_path / "kr").mkdir()
    log.to_csv(tmp_path / "kr" / LOG_NAME, index=False)
    pd.concat([videos, videos.iloc[[0]].assign(video_duration=5.0)]).to_csv(tmp_path / "kr" / VIDEOS_NAME, index=False)
    cfg = parse_config(kuairand_config(tmp_path / "kr", tiny_config_dict("e", "i")))
    with pytest.raises(DataError, match=rf"{VIDEOS_NAME}: 1 item_id\(s\) appear in several rows with different values \(e.g. 10\)"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)


def test_generic_days_default_to_utc(tmp_path):
    frame = events_frame()
    _, shanghai = _load(tmp_path, frame, timezone="Asia/Shanghai")
    events, funnel = _load(tmp_path, frame)
    assert funnel.notes["time zone"] == "UTC (the generic adapter's default; set data.timezone to change it)"
    assert shanghai.notes["time zone"] == "Asia/Shanghai (data.timezone)"
    # user 1's play at 00:30 on 2022-05-02 in Shanghai is 16:30 on 2022-05-01 in UTC
    row = events.filter((events.user_id == 1) & (events.item_id == 10) & (events.watch_ms == 10_000.0)).order_by("ts_ms").execute()
    assert row.day_n.tolist() == [day_number(pd.Timestamp("2022-04-30").date()), day_number(pd.Timestamp("2022-05-01").date())]
    assert row.hour.tolist() == [2, 16]


def test_timezone_defaults_per_adapter_and_other_adapters_keys_are_errors():
    generic = parse_config(tiny_config_dict("e", "i", data={"adapter": "generic", "path": "e"}))
    kuairand = parse_config(tiny_config_dict("e", "i", data={"adapter": "kuairand", "path": "d"}))
    assert (generic.data.timezone, generic.data.local_timezone) == (None, "UTC")
    assert kuairand.data.local_timezone == "Asia/Shanghai"
    with pytest.raises(ConfigError, match=r"key 'data': .*data.items_path: not used by adapter 'kuairand'; remove it"):
        parse_config(tiny_config_dict("e", "i", data={"adapter": "kuairand", "path": "d", "items_path": "i"}))
    with pytest.raises(ConfigError, match=r"data.kuairand_day: not used by adapter 'generic'"):
        parse_config(tiny_config_dict("e", "i", data={"adapter": "generic", "path": "e", "kuairand_day": "date_column"}))


@pytest.mark.parametrize(("unit", "per_ms", "name"), [("s", 1 / 1000, "seconds"), ("us", 1000, "microseconds"), ("ns", 1_000_000, "nanoseconds")])
def test_integer_timestamps_in_another_unit(tmp_path, unit, per_ms, name):
    frame = events_frame()
    ms = pd.to_datetime(frame.timestamp, utc=True).dt.as_unit("ms").astype("int64")
    frame["timestamp"] = ms * per_ms if per_ms >= 1 else ms // 1000  # the log's times are whole minutes
    with pytest.raises(DataError, match=rf"events.parquet: column 'timestamp' holds integers up to \d+, which look like epoch {name}, .*set timestamp_unit = \"{unit}\" under \[data\]"):
        _load(tmp_path, frame)
    events, _ = _load(tmp_path, frame, timestamp_unit=unit)
    reference, _ = _load(tmp_path, events_frame())  # ISO strings
    assert sorted(events.ts_ms.execute()) == sorted(reference.ts_ms.execute())
    assert events.count().execute() == 34


def _uint64_ids(frame: pd.DataFrame, big: int) -> pa.Table:
    ids = [big if u == 6 else u for u in frame.user_id]
    columns = {c: pa.array(frame[c].tolist()) for c in frame.columns if c != "user_id"}
    return pa.table({"user_id": pa.array(ids, pa.uint64()), **columns})


def test_uint64_ids_above_int64_are_an_error(tmp_path):
    big = 2**63 + 5
    pq.write_table(_uint64_ids(events_frame(), big), tmp_path / "events.parquet")
    raw = tiny_config_dict(tmp_path / "events.parquet", tmp_path / "unused")
    raw["data"] = {"adapter": "generic", "path": str(tmp_path / "events.parquet")}
    cfg = parse_config(raw)
    with pytest.raises(DataError, match=rf"events.parquet: column 'user_id' holds {big}, outside the signed 64-bit range"):
        load_events(connect(), cfg, Funnel())
    frame = events_frame()
    frame["user_id"] = [2**64 + 1 if u == 6 else u for u in frame.user_id]  # Python ints: beyond any int dtype
    frame.to_csv(tmp_path / "events.csv", index=False)
    raw["data"]["path"] = str(tmp_path / "events.csv")
    with pytest.raises(DataError, match=rf"events.csv: column 'user_id' holds {2**64 + 1}, outside"):
        load_events(connect(), parse_config(raw), Funnel())


def test_uint64_ids_within_int64_are_read(tmp_path):
    pq.write_table(_uint64_ids(events_frame(), 2**63 - 1), tmp_path / "events.parquet")
    events, _ = _load_path(tmp_path / "events.parquet")
    assert events.user_id.max().execute() == 2**63 - 1


def _load_path(path, **data):
    raw = tiny_config_dict(path, "unused")
    raw["data"] = {"adapter": "generic", "path": str(path), **data}
    funnel = Funnel()
    return load_events(connect(), parse_config(raw), funnel)[0], funnel


def test_metrics_scores_with_uint64_ids_above_int64(tmp_path):
    from twotower.evaluate.scores_file import read_scores, scores_metrics

    users = np.array([2**63 + 5, 2**63 + 5, 5, 5], dtype=np.uint64)
    frame = pd.DataFrame({"user_id": users, "item_id": np.array([2**64 - 1, 1, 2**64 - 1, 1], dtype=np.uint64), "label": [1, 0, 1, 0], "score": [0.9, 0.1, 0.2, 0.8]})
    frame.to_parquet(tmp_path / "scores.parquet")
    metrics = scores_metrics(read_scores(tmp_path / "scores.parquet"))
    # user 2^63+5 ranks its positive first (AUC 1, reciprocal rank 1), user 5 second (AUC 0, 1/2)
    assert metrics.n_users == 2
    assert metrics.values["auc"] == pytest.approx(0.5) and metrics.values["mrr"] == pytest.approx(0.75)
    assert metrics.global_auc == pytest.approx(0.75)  # pooled: 3 of the 4 (positive, negative) pairs in order


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Sao_Paulo", "Australia/Lord_Howe", "America/New_York", "Asia/Shanghai"])
def test_local_offsets_over_the_whole_valid_span_match_zoneinfo(zone):
    """Timestamps from 1970 to 2100 are kept, so the offset runs are found a day apart, not hour by hour."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from twotower.data.clean import TS_MAX_MS, offset_changes

    runs = offset_changes(0, TS_MAX_MS - 1, zone)
    stamps = np.random.default_rng(1).integers(0, TS_MAX_MS, 5000)
    starts = np.array([start for start, _ in runs])
    offsets = np.array([offset for _, offset in runs])[np.searchsorted(starts, stamps, side="right") - 1]
    expected = [dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(ZoneInfo(zone)).utcoffset().total_seconds() * 1000 for ms in stamps]
    assert offsets.tolist() == expected
