"""Hand-built run directories in the layout of the team plan (config.toml, status.json, summary.json,
experiment_<id>/{metrics.json, per_user.parquet, retrieval_per_user.parquet}), for compare and tracking
tests that need exact per-user values without training a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

WINDOWS = {
    1: ("2022-05-01", "2022-05-03", "2022-05-04"),
    2: ("2022-05-02", "2022-05-04", "2022-05-05"),
}


def played_frame(values: dict[int, float], lists: dict[int, int] | None = None, metric: str = "auc") -> pd.DataFrame:
    """Per-user rows of the model: user -> value of ``metric`` (the other played metrics get value / 2);
    ``lists`` gives a user's list_hash (default: the user id, i.e. the same list in every run)."""
    users = np.array(sorted(values), dtype=np.int64)
    lists = lists or {}
    vals = np.array([values[u] for u in users], dtype=np.float64)
    frame = pd.DataFrame(
        {
            "scorer": "model",
            "user_id": users,
            "list_hash": np.array([lists.get(u, u) for u in users], dtype=np.uint64),
            "n": 4,
            "n_pos": 2,
            "status": "evaluated",
        }
    )
    for name in ("auc", "map", "mrr", "ndcg@10", "recall@all_pos"):
        frame[name] = vals if name == metric else vals / 2
    return frame


def write_run(
    root: Path,
    name: str,
    seed: int = 0,
    played: dict[int, dict[int, float]] | None = None,
    catalog: dict[int, dict[int, float]] | None = None,
    lists: dict[int, dict[int, int]] | None = None,
    state: str | None = "completed",
    stamp: str = "20240101-000000",
    extra: dict | None = None,
) -> Path:
    """A run directory ``root/name/stamp``: ``played[exp][user] = auc``, ``catalog[exp][user] = recall@100``."""
    played = played or {1: {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}}
    run = root / name / stamp
    run.mkdir(parents=True)
    config = {
        "name": name,
        "seed": seed,
        "label": {"fraction_watch_above": 0.9},
        **(extra or {}),
        "experiments": [
            {"id": e, "train_start": WINDOWS[e][0], "train_end": WINDOWS[e][1], "val_date": WINDOWS[e][2]} for e in played
        ],
    }
    (run / "config.toml").write_text(tomli_w.dumps(config))
    if state is not None:
        (run / "status.json").write_text(json.dumps({"state": state}))
    (run / "summary.json").write_text(json.dumps({"config": name}))
    for exp, values in played.items():
        directory = run / f"experiment_{exp}"
        directory.mkdir()
        frame = played_frame(values, (lists or {}).get(exp))
        random = frame.assign(scorer="random", auc=0.5)  # another scorer: compare must read the model's rows only
        pd.concat([frame, random]).to_parquet(directory / "per_user.parquet", index=False)
        means = {m: float(frame[m].mean()) for m in ("auc", "map", "mrr", "ndcg@10", "recall@all_pos")}
        metrics = {"experiment": exp, "status": "Completed", "metrics": {"model": {**means, "n_users": len(frame)}}}
        (directory / "metrics.json").write_text(json.dumps(metrics))
        if catalog and exp in catalog:
            users = sorted(catalog[exp])
            pd.DataFrame(
                {
                    "scorer": ["model"] * len(users) + ["popularity"] * len(users),
                    "user_id": users * 2,
                    "cold": False,
                    "recall@100": [catalog[exp][u] for u in users] + [0.0] * len(users),
                }
            ).to_parquet(directory / "retrieval_per_user.parquet", index=False)
    return run
