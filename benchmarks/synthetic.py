"""A deterministic synthetic watch log in the generic layout, with realistic skew.

User activity and item popularity are heavy-tailed (Zipf-like weights), watch fractions depend on the
item's "quality" and on the user, and likes/shares are rare. ``generate`` builds the log in memory (used by
benchmarks/prepare.py); ``generate_by_day`` writes it one day at a time (one Parquet row group per million
rows), so that 100 million events never sit in memory at once (benchmarks/scale.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

START_MS = 1_651_334_400_000  # 2022-04-30 16:00 UTC = 2022-05-01 00:00 Asia/Shanghai
DAY_MS = 86_400_000


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def generate(out_dir: Path, events: int, days: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """Write ``events.parquet`` and ``items.parquet`` into ``out_dir``; returns their paths."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(events // 20, 10), max(events // 50, 10)
    n_creators = max(n_items // 5, 2)
    user = rng.choice(n_users, size=events, p=_zipf_weights(n_users, 0.9, rng)).astype(np.int64)
    item = rng.choice(n_items, size=events, p=_zipf_weights(n_items, 1.0, rng)).astype(np.int64)
    duration_s = np.round(rng.lognormal(3.0, 0.8, n_items).clip(2, 1200), 1)
    quality = rng.beta(2, 5, n_items)
    taste = rng.normal(0, 0.15, n_users)
    fraction = np.clip(rng.beta(1.2, 3.0, events) + quality[item] * 0.8 + taste[user], 0, 1.6)
    ts = START_MS + rng.integers(0, days * DAY_MS, events)
    table = _plays(user, item, ts, fraction, duration_s, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, items_path = out_dir / "events.parquet", out_dir / "items.parquet"
    pq.write_table(table, events_path, row_group_size=1_000_000)
    upload = np.datetime64("2022-04-30") - rng.integers(0, 365, n_items).astype("timedelta64[D]")
    items = pa.table(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "creator_id": rng.choice(n_creators, size=n_items, p=_zipf_weights(n_creators, 1.0, rng)).astype(np.int64),
            "duration_seconds": duration_s,
            "upload_date": upload,
        }
    )
    pq.write_table(items, items_path)
    return events_path, items_path


def _plays(user, item, ts, fraction, duration_s, rng: np.random.Generator, schema: pa.Schema | None = None) -> pa.Table:
    """The plays (user, item, ms timestamp, watched fraction; each (n,)) as an events table in time order;
    ``like`` then ``share`` drawn from ``rng``."""
    n = len(user)
    order = np.argsort(ts, kind="stable")
    return pa.table(
        {
            "user_id": user[order],
            "item_id": item[order],
            "timestamp": pa.array(ts[order], type=pa.timestamp("ms", tz="UTC")),
            "watch_seconds": np.round(fraction * duration_s[item], 2)[order],
            "duration_seconds": duration_s[item][order],
            "like": (rng.random(n) < 0.02 + 0.05 * fraction).astype(np.int8)[order],
            "share": (rng.random(n) < 0.005).astype(np.int8)[order],
        },
        schema=schema,
    )


def _sampler(weights: np.ndarray):
    """Draws of indices with probability ``weights`` by inverse CDF (one searchsorted per draw)."""
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return lambda rng, n: np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def generate_by_day(
    out_dir: Path, events: int, days: int = 14, n_users: int | None = None, n_items: int | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """``events`` plays over ``days`` days (the same number each day) into ``out_dir/events.parquet`` (rows in
    time order) and ``out_dir/items.parquet``; returns their paths. Users (default events / 20) have Zipf(0.9)
    activity and items (default events / 50) Zipf(1.0) popularity; 10% of the items are uploaded during the
    window (they can be played from their upload day on). The same arguments give the same files."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_users or max(events // 20, 10), n_items or max(events // 50, 10)
    n_creators = max(n_items // 5, 2)
    draw_user = _sampler(_zipf_weights(n_users, 0.9, rng))
    item_weights = _zipf_weights(n_items, 1.0, rng)
    duration_s = np.round(rng.lognormal(3.0, 0.8, n_items).clip(2, 1200), 1)
    quality = rng.beta(2, 5, n_items)
    taste = rng.normal(0, 0.15, n_users)
    # upload day relative to the window's first day: most before it, 10% during it
    upload_day = np.where(rng.random(n_items) < 0.1, rng.integers(0, days, n_items), -rng.integers(1, 365, n_items))
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, items_path = out_dir / "events.parquet", out_dir / "items.parquet"
    schema = pa.schema(
        [("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.timestamp("ms", tz="UTC")),
         ("watch_seconds", pa.float64()), ("duration_seconds", pa.float64()), ("like", pa.int8()), ("share", pa.int8())]
    )  # fmt: skip
    with pq.ParquetWriter(events_path, schema) as writer:
        for day in range(days):
            n = events // days + (events % days if day == days - 1 else 0)
            day_rng = np.random.default_rng([seed, day])
            available = upload_day <= day  # items that exist on this day
            draw_item = _sampler(np.where(available, item_weights, 0.0))
            user, item = draw_user(day_rng, n).astype(np.int64), draw_item(day_rng, n).astype(np.int64)
            fraction = np.clip(day_rng.beta(1.2, 3.0, n) + quality[item] * 0.8 + taste[user], 0, 1.6)
            ts = START_MS + day * DAY_MS + day_rng.integers(0, DAY_MS, n)
            writer.write_table(_plays(user, item, ts, fraction, duration_s, day_rng, schema), row_group_size=1_000_000)
    window_start = np.datetime64(int(START_MS // DAY_MS) + 1, "D")  # the first local day (Asia/Shanghai)
    items = pa.table(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "creator_id": rng.choice(n_creators, size=n_items, p=_zipf_weights(n_creators, 1.0, rng)).astype(np.int64),
            "duration_seconds": duration_s,
            "upload_date": window_start + upload_day.astype("timedelta64[D]"),
        }
    )
    pq.write_table(items, items_path)
    return events_path, items_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.out_dir, args.events, seed=args.seed))
