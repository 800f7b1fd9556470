"""A few days of the KuaiRand-Pure slice (../shared/data), written as a KuaiRand directory of their own.

The log rows are copied as text (no number is re-formatted), the feature files are linked. Used by the
Spark parity test (tests/test_spark_engine.py) and the Spark benchmark.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand-pure"
LOG = "log_standard_4_25_to_5_04_pure.csv"
CONFIG = ROOT / "configs" / "kuairand_blip_history.toml"
BEIJING = ZoneInfo("Asia/Shanghai")


def available() -> bool:
    return (KUAIRAND / LOG).is_file()


def write_cut(directory: Path, first: dt.date, last: dt.date) -> Path:
    """The plays of Beijing days ``first`` .. ``last`` in ``directory``/log_standard_cut.csv, with the
    slice's video and user feature files linked beside it; returns ``directory``."""
    start = dt.datetime.combine(first, dt.time(), BEIJING)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), BEIJING)
    log = pd.read_csv(KUAIRAND / LOG, dtype=str, keep_default_na=False)
    time_ms = log.time_ms.astype("int64")
    cut = log[(time_ms >= start.timestamp() * 1000) & (time_ms < end.timestamp() * 1000)]
    directory.mkdir(parents=True, exist_ok=True)
    cut.to_csv(directory / "log_standard_cut.csv", index=False)
    for other in KUAIRAND.glob("*_features_*.csv"):
        (directory / other.name).symlink_to(other)
    return directory
