"""A small hand-built log (generic layout) whose filters, labels, history and features are worked out by hand
in test_prepare.py. Times are Asia/Shanghai local; the file stores UTC. Every video lasts 10 s, so a watch of
more than 9 s is a positive."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

SHANGHAI = dt.timezone(dt.timedelta(hours=8))

# (user, item, local day, "HH:MM", watch seconds, duration seconds, like, share)
EVENTS = [
    # 2022-04-30 (before the training window: feeds history and features only)
    (1, 10, "2022-04-30", "10:00", 10.0, 10, 0, 0),
    (1, 11, "2022-04-30", "11:00", 1.0, 10, 0, 0),
    (2, 11, "2022-04-30", "12:00", 5.0, 10, 0, 0),
    # 2022-05-01 (training day 1)
    (1, 12, "2022-05-01", "09:00", 9.5, 10, 0, 0),
    (1, 13, "2022-05-01", "10:00", 2.0, 10, 0, 0),
    (2, 10, "2022-05-01", "09:00", 10.0, 10, 0, 0),
    (2, 12, "2022-05-01", "10:00", 1.0, 10, 0, 0),
    (2, 13, "2022-05-01", "23:45", 9.5, 10, 0, 0),
    (3, 10, "2022-05-01", "08:00", 0.5, 10, 0, 0),
    (6, 10, "2022-05-01", "11:00", 10.0, 10, 0, 0),
    (6, 10, "2022-05-01", "12:00", 1.0, 10, 0, 0),
    (6, 10, "2022-05-01", "13:00", 1.0, 10, 0, 0),
    # 2022-05-02 (training day 2); the first play is 16:30 UTC on 05-01
    (1, 10, "2022-05-02", "00:30", 10.0, 10, 0, 0),
    (2, 14, "2022-05-02", "09:00", 3.0, 10, 0, 0),
    (3, 10, "2022-05-02", "09:00", 9.5, 10, 0, 0),
    (3, 11, "2022-05-02", "10:00", 2.0, 10, 0, 0),
    (3, 11, "2022-05-02", "10:00", 2.0, 10, 0, 0),  # exact duplicate: dropped
    (4, 10, "2022-05-02", "10:00", 1.0, 10, 0, 0),
    (4, 12, "2022-05-02", "11:00", 1.0, 0, 0, 0),  # zero duration: dropped
    (6, 10, "2022-05-02", "11:00", 10.0, 10, 0, 0),
    (6, 10, "2022-05-02", "12:00", 1.0, 10, 0, 0),
    (6, 10, "2022-05-02", "13:00", 1.0, 10, 0, 0),
    # 2022-05-03 (training day 3)
    (1, 11, "2022-05-03", "08:00", 9.8, 10, 0, 0),
    (1, 14, "2022-05-03", "09:00", 1.0, 10, 0, 0),
    (2, 10, "2022-05-03", "08:00", 2.0, 10, 0, 0),
    (3, 12, "2022-05-03", "08:00", 1.0, 10, 0, 0),
    (5, 10, "2022-05-03", "08:00", 10.0, 10, 1, 0),
    # 2022-05-04 (validation day)
    (1, 12, "2022-05-04", "08:00", 10.0, 10, 0, 0),
    (1, 13, "2022-05-04", "09:00", 1.0, 10, 0, 0),
    (1, 12, "2022-05-04", "10:00", 1.0, 10, 0, 0),
    (1, 15, "2022-05-04", "11:00", 2.0, 10, 0, 0),
    (2, 10, "2022-05-04", "08:00", 10.0, 10, 0, 0),
    (3, 11, "2022-05-04", "08:00", 1.0, 10, 0, 0),
    (3, 10, "2022-05-04", "09:00", 1.0, 10, 0, 0),
    (5, 10, "2022-05-04", "09:00", 10.0, 10, 0, 0),
    (5, 11, "2022-05-04", "10:00", 0.0, 10, 0, 0),
]

ITEMS = pd.DataFrame(
    {
        "item_id": [10, 11, 12, 13, 14, 15],
        "creator_id": [100, 100, 200, 200, 300, 300],
        "duration_seconds": [10.0] * 6,
        "upload_date": ["2022-04-01"] * 6,
    }
)


def utc_timestamp(day: str, hhmm: str) -> pd.Timestamp:
    local = dt.datetime.fromisoformat(f"{day}T{hhmm}:00").replace(tzinfo=SHANGHAI)
    return pd.Timestamp(local.astimezone(dt.UTC))


def events_frame(events=EVENTS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [e[0] for e in events],
            "item_id": [e[1] for e in events],
            "timestamp": [utc_timestamp(e[2], e[3]).strftime("%Y-%m-%dT%H:%M:%SZ") for e in events],
            "watch_seconds": [e[4] for e in events],
            "duration_seconds": [float(e[5]) for e in events],
            "like": [e[6] for e in events],
            "share": [e[7] for e in events],
        }
    )


def write_tiny_log(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    events, items = directory / "events.parquet", directory / "items.parquet"
    events_frame().to_parquet(events, index=False)
    ITEMS.to_parquet(items, index=False)
    return events, items


def tiny_config_dict(events: Path, items: Path, **overrides) -> dict:
    raw = {
        "name": "tiny",
        "seed": 7,
        "data": {"adapter": "generic", "path": str(events), "items_path": str(items), "timezone": "Asia/Shanghai"},
        "filters": {
            "client": {"min_interactions": 3, "max_interactions": 5, "min_positives": 1, "min_negatives": 1},
            "item": {"min_interactions": 3},
        },
        "features": {"smoothing": 5.0},
        "experiments": [{"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-03", "val_date": "2022-05-04"}],
    }
    for key, value in overrides.items():
        raw[key] = value
    return raw
