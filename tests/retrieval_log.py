"""A small synthetic log for the retrieval objective, with a planted popularity and affinity structure, in the
prepared layout (train.parquet rows, history.parquet, the content table, catalog.parquet).

Items belong to one of ``n_topics`` topics; an item's content vector is its topic's centre plus noise; item
popularity is Zipf-like. Each user prefers one topic. On every day each user completes ``per_day`` items,
drawn with probability proportional to popularity x ``affinity`` (items of the user's topic) or x 1, and
plays a few popular ones without completing them (label 0). Popularity alone recalls part of a user's next
positives; knowing the user's topic (from the content of their past positives: ``pos_mean_hist_emb``)
recalls more. History snapshots hold each user's positives of the previous days (most recent first). The
catalog holds every item on every day, with its plays and positive rate of the previous days (the same
point-in-time rule as the rows' item features).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from twotower.data.schema import CREATOR_BASE, ITEM_BASE, USER_BASE

DAY0 = dt.date(2022, 5, 1)


def _item_side(idx: np.ndarray, plays: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """ITEM_BASE and CREATOR_BASE columns for items ``idx`` from the statistics of the previous days."""
    cols = {c: np.zeros(len(idx)) for c in (*ITEM_BASE, *CREATOR_BASE)}
    cols["item_plays"] = plays[idx]
    cols["item_pos_rate"] = (positives[idx] + 1) / (plays[idx] + 2)
    cols["item_has_past"] = (plays[idx] > 0).astype(float)
    return cols


def planted_log(
    seed: int = 0,
    n_users: int = 240,
    n_items: int = 160,
    n_topics: int = 8,
    days: int = 5,
    per_day: int = 6,
    affinity: float = 12.0,
    dim: int = 16,
) -> dict:
    """Days 0..days-1 are training days ("train"), day ``days`` is the evaluation day ("eval" rows)."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_items)
    centres = rng.normal(0, 1, (n_topics, dim))
    vectors = (centres[topic] + rng.normal(0, 0.3, (n_items, dim))).astype(np.float32)
    popularity = 1.0 / (1 + rng.permutation(n_items)) ** 0.8
    taste = rng.integers(0, n_topics, n_users)
    item_ids, creators = 1000 + np.arange(n_items), 50 + topic
    plays, positives = np.zeros(n_items), np.zeros(n_items)
    past: list[list[int]] = [[] for _ in range(n_users)]
    frames, catalogs, history = [], [], []
    for d in range(days + 1):
        day = DAY0 + dt.timedelta(days=d)
        all_items = np.arange(n_items)
        catalogs.append(
            pd.DataFrame(
                {
                    "day": day,
                    "item_id": item_ids,
                    "creator_id": creators,
                    **_item_side(all_items, plays, positives),
                }
            )
        )
        played = []
        for u in range(n_users):
            weight = popularity * np.where(topic == taste[u], affinity, 1.0)
            done = rng.choice(n_items, per_day, replace=False, p=weight / weight.sum())
            skipped = rng.choice(n_items, per_day // 2, replace=False, p=popularity / popularity.sum())
            played += [(u, i, 1) for i in done] + [(u, i, 0) for i in skipped if i not in done]
            history.append((u + 1, day, [int(item_ids[i]) for i in reversed(past[u][-50:])], []))
        u, i, label = (np.array(x) for x in zip(*played, strict=True))
        frame = pd.DataFrame(
            {
                "user_id": u + 1,
                "item_id": item_ids[i],
                "creator_id": creators[i],
                "day": day,
                "dow": day.weekday(),
                "hour": rng.integers(0, 24, len(u)),
                "label": label,
                "weight": 1.0,
                **{c: np.zeros(len(u)) for c in USER_BASE},
                **_item_side(i, plays, positives),
            }
        )
        frames.append(frame)
        np.add.at(plays, i, 1)  # the day's outcomes feed only the later days' statistics and histories
        np.add.at(positives, i, label)
        for user, item in zip(u[label == 1], i[label == 1], strict=True):
            past[user].append(int(item))
    rows = pd.concat(frames, ignore_index=True)
    last = DAY0 + dt.timedelta(days=days)
    return {
        "train": rows[rows["day"] < last].reset_index(drop=True),
        "eval": rows[rows["day"] == last].reset_index(drop=True),
        "history": pd.DataFrame(history, columns=["user_id", "day", "pos_items", "neg_items"]),
        "item_table": pd.DataFrame({"item_id": item_ids, "vector": list(vectors)}),
        "catalog": pd.concat(catalogs, ignore_index=True),
    }


def recall_at(
    scores: np.ndarray, users: np.ndarray, targets: pd.DataFrame, item_ids: np.ndarray, k: int
) -> float:
    """Mean over users of |top-k ∩ targets| / |targets|. scores [n_users, n_items] (rows: ``users``, columns:
    ``item_ids``); targets: user_id, item_id (the evaluation day's positives)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    recalls = []
    for row, user in enumerate(users):
        wanted = set(targets.loc[targets["user_id"] == user, "item_id"])
        if wanted:
            recalls.append(len(wanted & set(item_ids[top[row]].tolist())) / len(wanted))
    return float(np.mean(recalls))
