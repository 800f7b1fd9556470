"""The one-command run end to end on the hand-built log: files, tables, determinism, no overwrite."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.config import parse_config
from twotower.pipeline import run

EXPERIMENT_FILES = ("metrics.json", "model.pt", "item_embeddings.parquet", "scores.parquet", "prepared/funnel.json", "prepared/train.parquet", "prepared/eval.parquet")


def _config(tmp_path, **overrides):
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items, **overrides)
    users = tmp_path / "data" / "users.csv"
    pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "register_days": [10, 200, 35, 800, 4, 90]}).to_csv(users, index=False)
    raw["data"]["users_path"] = str(users)
    raw["content"] = {"encoder": "metadata", "pca_components": 2, "cache_dir": str(tmp_path / "cache")}
    raw["train"] = {"epochs": 3, "batch_size": 2}
    raw["model"] = {"hidden": [16], "output_dim": 8}
    return parse_config(raw)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    cfg = _config(tmp_path)
    first = run(cfg, tmp_path / "runs", progress=False)
    first_files = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    second = run(cfg, tmp_path / "runs", progress=False)
    return cfg, first, second, first_files


def test_run_writes_every_file(two_runs):
    _, first, _, _ = two_runs
    for name in ("config.toml", "tables.md", "summary.json", "metrics.png", "training.png"):
        assert (first / name).is_file(), name
    for name in EXPERIMENT_FILES:
        assert (first / "experiment_1" / name).is_file(), name
    tables = (first / "tables.md").read_text()
    assert "| 1 | played (p90) | 2022-05-01 - 2022-05-03 (3 days) | 2022-05-04 | Completed |" in tables
    for row in ("| 1 (model) |", "| 1 (random) |", "| 1 (popularity) |"):
        assert row in tables
    assert "stand-in for BLIP" in tables
    metrics = json.loads((first / "experiment_1" / "metrics.json").read_text())
    assert metrics["metrics"]["model"]["n_users"] == 2 and metrics["metrics"]["model"]["n_rows"] == 5
    assert metrics["evaluation_set"]["users_left_out"] == {"users without a negative row": 1, "users without a positive row": 1}
    assert metrics["evaluation_set"]["share_of_rows_with_items_unseen_in_training"] == pytest.approx(0.6)
    assert set(metrics["metrics"]) == {"model", "random", "popularity"}


def test_second_run_is_separate_and_identical(two_runs):
    _, first, second, first_files = two_runs
    assert first != second and first.parent == second.parent
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == first_files
    a = json.loads((first / "summary.json").read_text())["experiments"]
    b = json.loads((second / "summary.json").read_text())["experiments"]
    assert a == [{**e, "seconds": a[i]["seconds"]} for i, e in enumerate(b)]


def test_failing_experiment_is_reported_and_others_run(tmp_path):
    cfg = _config(
        tmp_path,
        experiments=[
            {"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-03", "val_date": "2022-05-04"},
            {"id": 2, "train_start": "2023-01-01", "train_end": "2023-01-07", "val_date": "2023-01-08"},
        ],
    )
    run_dir = run(cfg, tmp_path / "runs", progress=False)
    tables = (run_dir / "tables.md").read_text()
    assert "| 1 | played (p90) | 2022-05-01 - 2022-05-03 (3 days) | 2022-05-04 | Completed |" in tables
    assert "| 2 | played (p90) | 2023-01-01 - 2023-01-07 (7 days) | 2023-01-08 | Failed: DataError: no events in the" in tables
    assert (run_dir / "experiment_2" / "error.txt").is_file()
