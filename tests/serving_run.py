"""One completed run on the hand-built log (tinylog.py + test_catalog.py's plays), made once per test session
for the recommend and serve tests, and the user features of that log worked out by hand.

Validation day 2022-05-04 (a Wednesday, dow 2); the catalog that day is items 10..16 and 18; users 1, 2, 5
and 7 have a positive play that day (the prepared retrieval users; 7 is cold), users 3, 4 and 6 played in
the lookback window only.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import numpy as np
import pandas as pd

from tests.test_catalog import EXTRA_EVENTS, EXTRA_ITEMS
from tests.test_pipeline import _config
from tests.tinylog import EVENTS, ITEMS, events_frame
from twotower.pipeline import run

VAL_DAY = dt.date(2022, 5, 4)
# Window 04-20..05-03 after cleaning: 26 plays, 10 of them watched past 90% (04-30: 3/1, 05-01: 9/4,
# 05-02: 9/3 with user 4's play of item 18, 05-03: 5/2).
PRIOR_RATE = 10 / 26
SMOOTHING = 5.0
# Mean watch time (s) of the items in the window, over every user's plays.
MEAN_WATCH_S = {10: 77 / 14, 11: (1 + 5 + 2 + 9.8) / 4, 12: (9.5 + 1 + 1) / 3, 13: (2 + 9.5) / 2, 14: (3 + 1) / 2, 18: 1.0}


@functools.cache
def _make_run(base: str) -> Path:
    tmp_path = Path(base) / "serving_run"
    tmp_path.mkdir()
    cfg = _config(tmp_path)
    events_frame(EVENTS + EXTRA_EVENTS).to_parquet(cfg.data.path, index=False)
    pd.concat([ITEMS, EXTRA_ITEMS], ignore_index=True).to_parquet(cfg.data.items_path, index=False)
    return run(cfg, tmp_path / "runs", progress=False)


def serving_run(tmp_path_factory) -> Path:
    """The run directory (made on first use in the session's base temporary directory)."""
    return _make_run(str(tmp_path_factory.getbasetemp()))


def user_row(user_id: int, plays: int, positives: int, mean_watch_s: float, hour: int = 0) -> pd.DataFrame:
    """A user-side row as prepare builds it for 2022-05-04 (USER_BASE with the window's prior)."""
    return pd.DataFrame(
        {
            "user_id": [user_id],
            "day": [VAL_DAY],
            "dow": [2],
            "hour": [hour],
            "user_plays": [float(plays)],
            "user_pos_rate": [(positives + SMOOTHING * PRIOR_RATE) / (plays + SMOOTHING)],
            "user_mean_watch_s": [mean_watch_s],
            "user_has_past": [int(plays > 0)],
        }
    )


def history_row(user_id: int, pos: list[int], neg: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": [user_id], "day": [VAL_DAY], "pos_items": [np.array(pos, np.int64)], "neg_items": [np.array(neg, np.int64)]}
    )
