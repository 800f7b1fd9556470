"""Builders of bad input for the hostile-input tests: each test builds its own bad file from the tiny log.

``tinylog.py`` holds the hand-built log (local Asia/Shanghai times, stored as UTC); the helpers here plant
bad rows into it, write it with real IEEE NaN/inf (pandas would turn NaN into Parquet nulls), and write it
in the KuaiRand layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.tinylog import ITEMS, SHANGHAI, events_frame, utc_timestamp

NAN, INF = math.nan, math.inf
# Plays of user 5, item 11 on 2022-05-03 (after its one valid play at 08:00) with a non-finite watch time or
# duration (seconds). Kept, they would make user 5's mean watch time inf and label NaN/inf watches positive.
NON_FINITE = [(NAN, 10.0), (INF, 10.0), (-INF, 10.0), (10.0, NAN), (10.0, INF), (10.0, -INF)]
# The same values as strings, in the spellings CSV writers use (pandas/NumPy/DuckDB and Java).
NON_FINITE_TEXT = [("nan", "10.0"), ("inf", "10.0"), ("-Infinity", "10.0"), ("10.0", "NaN"), ("10.0", "Infinity"), ("10.0", "-inf")]


def with_non_finite(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tiny log plus the NON_FINITE plays (appended at the end)."""
    frame = events_frame() if frame is None else frame
    rows = [
        {"user_id": 5, "item_id": 11, "timestamp": utc_timestamp("2022-05-03", f"{10 + i}:00").strftime("%Y-%m-%dT%H:%M:%SZ"),
         "watch_seconds": watch, "duration_seconds": duration, "like": 0, "share": 0}
        for i, (watch, duration) in enumerate(NON_FINITE)
    ]
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def write_parquet_exact(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` keeping float NaN as IEEE NaN (``None`` stays a Parquet null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    def values(column: pd.Series) -> list:
        if pd.api.types.is_float_dtype(column):
            return column.tolist()  # NaN stays NaN
        return [None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for v in column.tolist()]

    pq.write_table(pa.table({c: pa.array(values(frame[c])) for c in frame.columns}), path)
    return path


def write_csv_text(frame: pd.DataFrame, path: Path, replacements: dict[tuple[int, str], str]) -> Path:
    """Write ``frame`` as CSV with some cells replaced by literal text: {(row, column): text}."""
    frame = frame.astype(object).copy()
    for (row, column), text in replacements.items():
        frame.loc[row, column] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def non_finite_text_cells(first_row: int, watch: str, duration: str) -> dict[tuple[int, str], str]:
    """Replacements that write NON_FINITE_TEXT into the rows from ``first_row`` on."""
    cells = {}
    for i, (w, d) in enumerate(NON_FINITE_TEXT):
        cells[(first_row + i, watch)] = w
        cells[(first_row + i, duration)] = d
    return cells


def kuairand_frames(events: pd.DataFrame, items: pd.DataFrame = ITEMS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The generic tiny log and items in the official KuaiRand layout (times in ms, flags is_*)."""
    stamps = pd.to_datetime(events.timestamp, utc=True)
    local = stamps.dt.tz_convert(SHANGHAI)
    log = pd.DataFrame(
        {
            "user_id": events.user_id,
            "video_id": events.item_id,
            "date": local.dt.strftime("%Y%m%d").astype(int),
            "hourmin": local.dt.strftime("%H%M").astype(int),
            "time_ms": (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1),
            "is_click": 1,
            "is_like": events.like,
            "is_follow": 0,
            "is_comment": 0,
            "is_forward": events.share,
            "is_hate": 0,
            "long_view": 0,
            "play_time_ms": events.watch_seconds * 1000,
            "duration_ms": events.duration_seconds * 1000,
            "profile_stay_time": 0,
            "comment_stay_time": 0,
            "is_profile_enter": 0,
            "is_rand": 0,
            "tab": 1,
        }
    )
    videos = pd.DataFrame(
        {
            "video_id": items.item_id,
            "author_id": items.creator_id,
            "video_type": "NORMAL",
            "upload_dt": items.upload_date,
            "upload_type": "ShortImport",
            "visible_status": 0.0,
            "video_duration": items.duration_seconds * 1000,
            "server_width": 720.0,
            "server_height": 1280.0,
            "music_id": 7,
            "music_type": 9.0,
            "tag": "1",
        }
    )
    return log, videos


LOG_NAME = "log_standard_4_25_to_5_04_pure.csv"
VIDEOS_NAME = "video_features_basic_pure.csv"


def kuairand_config(directory: Path, base: dict) -> dict:
    """``base`` (a tiny config dict) reading ``directory`` with the kuairand adapter and its default zone."""
    return {**base, "data": {"adapter": "kuairand", "path": str(directory)}}
