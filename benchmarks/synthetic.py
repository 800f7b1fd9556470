"""A deterministic synthetic watch log in the generic layout, with realistic skew.

User activity and item popularity are heavy-tailed (Zipf-like weights), watch fractions depend on the
item's "quality" and on the user, and likes/shares are rare. Used by benchmarks/prepare.py.
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
    order = np.argsort(ts, kind="stable")
    table = pa.table(
        {
            "user_id": user[order],
            "item_id": item[order],
            "timestamp": pa.array(ts[order], type=pa.timestamp("ms", tz="UTC")),
            "watch_seconds": np.round(fraction * duration_s[item], 2)[order],
            "duration_seconds": duration_s[item][order],
            "like": (rng.random(events) < 0.02 + 0.05 * fraction).astype(np.int8)[order],
            "share": (rng.random(events) < 0.005).astype(np.int8)[order],
        }
    )
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.out_dir, args.events, seed=args.seed))
