"""The canonical schema every ingest adapter produces, and the files ``prepare`` writes.

Canonical tables (DuckDB tables during ``prepare``; the item and user tables are also written as Parquet):

events   one row per play (exact duplicates and invalid rows already dropped)
    user_id int64, item_id int64, ts_ms int64 (UTC epoch milliseconds),
    day date (calendar day in the configured time zone), hour int (0..23, local), dow int (0=Monday..6),
    watch_ms float64 (>= 0), duration_ms float64 (> 0), fraction_watch float64 (= watch_ms / duration_ms,
    may exceed 1 for replays), like/share/follow/comment int (0/1), label int (0/1, from the config's
    label criterion)

items    one row per item: item_id int64, creator_id int64 (nullable), duration_ms float64 (nullable),
    upload_date date (nullable), and optional side information used by the ``metadata`` content encoder:
    video_type str, upload_type str, music_id int64, music_type str, tags str (comma-separated ids),
    width float64, height float64, caption str, cover_text str

users    one row per user: user_id int64 and static numeric columns named ``static_*`` (KuaiRand:
    user_features_*.csv, one snapshot of unknown date: treated as static)

Files written by ``prepare`` into ``<out>/`` for one experiment (a local directory or a URI). Each table is
one Parquet file; with ``data.partition_by_day`` the tables with a ``day`` are directories of Hive folders
``day=YYYY-MM-DD/`` (read them with ``prepared.read_table``). ``day`` is a timestamp at midnight without a
zone (``timestamp[us]``) on every engine:

    train.parquet      training examples after filters and 5:5 sampling: EXAMPLE_KEYS + CONTEXT + label,
                       weight + base features (USER_BASE, ITEM_BASE, CREATOR_BASE)
    eval.parquet       the validation day's played re-ranking set (one row per user and item): EXAMPLE_KEYS
                       + CONTEXT + label + unseen_item + base features
    history.parquet    user_id, day, pos_items list<int64>, neg_items list<int64> (most recent first, <= max
                       items), one row for every (user, day) that train or eval rows need
    items.parquet      canonical items, restricted to items that occur in the logs, + ``in_train`` (bool: the
                       item occurs in the filtered training window, the set PCA is fitted on)
    users.parquet      canonical users (static features)
    popularity.parquet item_id, plays, positives (int64): plays in the cleaned training window before filters
    funnel.json        rows, users, items and positive share after each step; drops with their reasons
    prepare.json       {"state": "running" | "completed", ...}: written first and, as "completed", last
                       (see ``outdir.py``); every Parquet file is written under a temporary name, then renamed
"""

from __future__ import annotations

EVENT_COLUMNS = (
    "user_id",
    "item_id",
    "ts_ms",
    "day",
    "hour",
    "dow",
    "watch_ms",
    "duration_ms",
    "fraction_watch",
    "like",
    "share",
    "follow",
    "comment",
)

# Point-in-time base features: computed from days [day - lookback, day - 1] only.
USER_BASE = ("user_plays", "user_pos_rate", "user_mean_watch_s", "user_has_past")
ITEM_BASE = (
    "item_plays",
    "item_pos_rate",
    "item_mean_fraction",
    "item_likes",
    "item_shares",
    "item_has_past",
    "item_age_days",
    "item_duration_s",
)
CREATOR_BASE = (
    "creator_plays",
    "creator_pos_rate",
    "creator_mean_fraction",
    "creator_likes",
    "creator_shares",
    "creator_has_past",
)
