"""Property (issue 10): on any malformed generic event log, ``prepare`` either succeeds with every bad row
counted in the funnel and no NaN or inf in what it writes, or stops with a one-line DataError/ConfigError.

Logs are generated with Hypothesis: missing, extra and wrongly typed columns, NaN/±inf, zero, negative and
huge watch times and durations, timestamps outside 1970..2100, huge and negative ids, missing flags,
empty files; as Parquet (real IEEE NaN) or CSV. A row-by-row oracle says which rows are valid.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twotower.config import ConfigError, parse_config
from twotower.data.prepare import prepare_experiment
from twotower.data.validate import DataError

DAY_MS = 86_400_000
START_MS = int(dt.datetime(2022, 5, 1, tzinfo=dt.UTC).timestamp() * 1000)
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
ERRORS = ("drop user_id", "drop duration_seconds", "string ids", "float ids", "uint64 above int64", "empty")

seconds = st.one_of(
    st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
    st.sampled_from([0.0, 10.0, 10.0, -1.0, -1e9, math.nan, math.inf, -math.inf, 1e300, 5e-324]),
)
ids = st.one_of(st.integers(1, 4), st.sampled_from([0, -7, 2**62, 2**63 - 1, -(2**63)]))  # all within int64
stamps = st.one_of(st.integers(0, 4 * DAY_MS - 1).map(lambda ms: START_MS + ms), st.sampled_from([-1000, 0, TS_MAX_MS, 5 * 10**12]))
rows = st.tuples(ids, st.integers(1, 5), stamps, seconds, seconds, st.sampled_from([0, 1, 1, None]))


# A valid backbone that prepares successfully: users 1..3 play one positive and one negative a day on
# 2022-05-01..03 (training days and validation day). Hypothesis adds hostile rows to it.
BACKBONE = [
    (user, 1 + (user + day + negative) % 5, START_MS + day * DAY_MS + (user * 60 + negative) * 60_000, 1.0 if negative else 10.0, 10.0, 0)
    for user in (1, 2, 3)
    for day in (0, 1, 2)
    for negative in (0, 1)
]


@st.composite
def event_logs(draw) -> list[tuple]:
    """The backbone, hostile rows, and copies of some rows (exact duplicates)."""
    log = BACKBONE + draw(st.lists(rows, min_size=1, max_size=30))
    return log + [log[i] for i in draw(st.lists(st.integers(0, len(log) - 1), max_size=4))]


def _valid(row: tuple, has_like: bool = True) -> bool:
    """The row-by-row oracle: which rows ``clean`` must keep (same float arithmetic as the engines)."""
    _, _, ts, watch, duration, like = row
    watch_ms, duration_ms = watch * 1000.0, duration * 1000.0
    return (
        0 <= ts < TS_MAX_MS
        and math.isfinite(watch_ms) and math.isfinite(duration_ms)
        and 0 <= watch_ms <= 1e12 and 0.001 <= duration_ms <= 1e12
        and (like is not None or not has_like)
    )


def _iso(ms: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _write(directory: Path, log: list[tuple], fmt: str, stamp: str, mutation: str) -> Path:
    if mutation == "empty":
        log = []
    users = [r[0] for r in log]
    if stamp == "epoch ms":
        timestamps = pa.array([r[2] for r in log], pa.int64())
    elif stamp == "parquet timestamp" and fmt == "parquet":
        timestamps = pa.array([r[2] for r in log], pa.timestamp("ms", tz="UTC"))
    else:  # ISO-8601 strings
        timestamps = pa.array([_iso(r[2]) for r in log], pa.string())
    columns = {
        "user_id": pa.array(users, pa.int64()),
        "item_id": pa.array([r[1] for r in log], pa.int64()),
        "timestamp": timestamps,
        "watch_seconds": pa.array([r[3] for r in log], pa.float64()),
        "duration_seconds": pa.array([r[4] for r in log], pa.float64()),
        "like": pa.array([r[5] for r in log], pa.int64()),
    }
    if mutation == "extra column":
        columns["session"] = pa.array([i % 3 for i in range(len(log))], pa.int64())
    if mutation.startswith("drop "):
        del columns[mutation.removeprefix("drop ")]
    if mutation == "string ids":
        columns["user_id"] = pa.array([f"u{u}" for u in users], pa.string())
    if mutation == "float ids":
        columns["user_id"] = pa.array([u + 0.5 for u in users], pa.float64())
    if mutation == "uint64 above int64":
        columns["user_id"] = pa.array([2**63 + 1] * len(log), pa.uint64())
    table = pa.table(columns)
    if fmt == "parquet":
        pq.write_table(table, directory / "events.parquet")
        return directory / "events.parquet"
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for name in ("watch_seconds", "duration_seconds"):
        if name in frame:
            frame[name] = [repr(v) for v in frame[name]]  # 'nan', 'inf', '-inf', '1e+300' as text
    frame.to_csv(directory / "events.csv", index=False)
    return directory / "events.csv"


def _config(path: Path) -> dict:
    return {
        "name": "property",
        "data": {"adapter": "generic", "path": str(path)},
        "filters": {"client": {"min_interactions": 1, "min_positives": 1, "min_negatives": 1}, "item": {"min_interactions": 1}},
        "history": {"lookback_days": 2},
        "experiments": [{"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-02", "val_date": "2022-05-03"}],
    }


def _assert_finite(out: Path) -> None:
    for path in out.glob("*.parquet"):
        frame = pd.read_parquet(path)
        for column in frame.select_dtypes("number").columns:
            values = frame[column].dropna().to_numpy(dtype=np.float64)
            assert np.isfinite(values).all(), f"{path.name}: {column} holds NaN or inf"


def _prepare(log: list[tuple], fmt: str, stamp: str, mutation: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), log, fmt, stamp, mutation)
        try:
            cfg = parse_config(_config(path))
            result = prepare_experiment(cfg, cfg.experiments[0], Path(tmp) / "out", progress=False)
        except (DataError, ConfigError) as exc:
            assert str(exc) and "\n" not in str(exc), str(exc)
            assert not (Path(tmp) / "out").exists()
            return
        assert mutation not in ERRORS, f"{mutation} should have stopped prepare"
        funnel = result.funnel
        raw, cleaned = funnel.steps[0].rows, funnel.steps[1].rows
        assert raw == len(log) == cleaned + sum(funnel.drops.values())
        valid = [r for r in log if _valid(r, has_like=mutation != "drop like")]
        assert sum(n for reason, n in funnel.drops.items() if reason != "exact duplicate") == len(log) - len(valid)
        if mutation != "extra column":  # exact duplicates: identical in every source column
            distinct = {r[:5] if mutation == "drop like" else r for r in valid}
            assert funnel.drops["exact duplicate"] == len(valid) - len(distinct)
        _assert_finite(Path(tmp) / "out")


# Deterministic (derandomize) so that CI never flakes; each success is a full prepare (~2 s on 2 cores).
SETTINGS = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": [HealthCheck.too_slow]}


@pytest.mark.parametrize(
    ("fmt", "stamp", "mutation"),
    [("parquet", "parquet timestamp", "none"), ("parquet", "epoch ms", "drop like"), ("csv", "iso", "none"), ("csv", "epoch ms", "extra column")],
)
@settings(max_examples=6, **SETTINGS)
@given(log=event_logs())
# one NaN watch time in an otherwise finite column: DuckDB once folded isnan() to false from the Parquet
# column statistics (which ignore NaN) and kept the row
@example(log=BACKBONE + [(1, 1, START_MS + 1000, math.nan, 10.0, 0)])
def test_hostile_rows_are_counted_and_never_written(log, fmt, stamp, mutation):
    """Prepare succeeds (or stops on a one-line error, e.g. an empty window); every bad row is counted."""
    _prepare(log, fmt, stamp, mutation)


@settings(max_examples=15, **SETTINGS)
@given(log=event_logs(), fmt=st.sampled_from(["parquet", "csv"]), mutation=st.sampled_from(ERRORS))
def test_hostile_files_stop_with_one_line(log, fmt, mutation):
    """Missing columns, wrong types, ids beyond int64, empty files: a one-line DataError, nothing written."""
    _prepare(log, fmt, "iso", mutation)
