"""The one-command run end to end on the hand-built log: files, tables, determinism, no overwrite."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tests.tinylog import EVENTS, events_frame, tiny_config_dict, write_tiny_log
from twotower.config import ConfigError, parse_config, write_resolved_config
from twotower.data.validate import DataError
from twotower.evaluate.metrics import ranking_metrics
from twotower.pipeline import evaluate_run, run, train_run
from twotower.reuse import link_files

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
    assert set(metrics["metrics"]) == {"model", "random", "popularity", "item_prior"}
    assert json.loads((first / "status.json").read_text())["state"] == "completed"
    assert json.loads((first / "experiment_1" / "status.json").read_text())["state"] == "completed"


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

    assert json.loads((run_dir / "status.json").read_text()) | {"started": None, "finished": None} == {
        "state": "failed", "started": None, "finished": None, "failed_experiments": [2]
    }


def test_item_prior_is_the_rows_point_in_time_positive_rate(two_runs):
    """The item prior ranks each list by item_pos_rate, the same column the model gets as a feature."""
    _, first, _, _ = two_runs
    ev = pd.read_parquet(first / "experiment_1" / "prepared" / "eval.parquet")
    expected = ranking_metrics(ev.user_id, ev.item_id, ev.label, ev.item_pos_rate)
    metrics = json.loads((first / "experiment_1" / "metrics.json").read_text())["metrics"]["item_prior"]
    assert metrics["auc"] == pytest.approx(expected.values["auc"]) and metrics["n_rows"] == 5


def test_empty_evaluation_set_fails_the_experiment_with_the_funnel_written(tmp_path):
    """Without the validation day's negative plays of users 1 and 5, no user has both labels on 05-04."""
    cfg = _config(tmp_path)
    dropped = {(1, 13, "2022-05-04"), (1, 15, "2022-05-04"), (5, 11, "2022-05-04")}
    events = [e for e in EVENTS if (e[0], e[1], e[2]) not in dropped and not (e[:3] == (1, 12, "2022-05-04") and e[4] < 9)]
    events_frame(events).to_parquet(cfg.data.path, index=False)
    run_dir = run(cfg, tmp_path / "runs", progress=False)
    tables = (run_dir / "tables.md").read_text()
    assert (
        "| 1 | played (p90) | 2022-05-01 - 2022-05-03 (3 days) | 2022-05-04 | Failed: empty evaluation set (no user with a "
        "positive and a negative row on 2022-05-04: 3 users without a negative row, 1 users without a positive row) |"
    ) in tables
    assert (run_dir / "experiment_1" / "prepared" / "funnel.json").is_file()
    assert not (run_dir / "experiment_1" / "model.pt").exists()


def test_training_window_with_days_missing_says_how_many_have_data(tmp_path):
    cfg = _config(tmp_path, experiments=[{"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-03", "val_date": "2022-05-04"}])
    tables = (run(cfg, tmp_path / "runs", progress=False) / "tables.md").read_text()
    # the log has plays on 04-30 and 05-01..05-03 only: 4 of the 9 requested days
    assert "| 1 | played (p90) | 2022-04-25 - 2022-05-03 (4 of 9 days with data) | 2022-05-04 | Completed |" in tables


def test_prepared_data_is_reused_until_an_input_changes(tmp_path, capsys):
    cfg = _config(tmp_path)
    first = run(cfg, tmp_path / "runs")
    assert "reusing prepared data" not in capsys.readouterr().out
    second = run(cfg, tmp_path / "runs")
    out = capsys.readouterr().out
    assert "reusing prepared data" in out and "reusing the content table" in out
    assert pd.read_parquet(first / "experiment_1" / "scores.parquet").equals(pd.read_parquet(second / "experiment_1" / "scores.parquet"))
    # a config section that affects prepare invalidates it (the content section does not)
    other = cfg.model_copy(update={"label": cfg.label.model_copy(update={"fraction_watch_above": 0.5})})
    run(other, tmp_path / "runs")
    assert "reusing prepared data" not in capsys.readouterr().out
    # so does a change to a data file (its modification time)
    events = cfg.data.path
    os.utime(events, ns=(events.stat().st_atime_ns, events.stat().st_mtime_ns + 10**9))
    run(cfg, tmp_path / "runs")
    assert "reusing prepared data" not in capsys.readouterr().out


def test_train_then_evaluate_gives_the_metrics_run_gives(tmp_path, two_runs):
    cfg, first, _, _ = two_runs
    prepared_root = tmp_path / "prepared"
    link_files(first / "experiment_1" / "prepared", prepared_root / "experiment_1")
    run_dir = train_run(cfg, prepared_root, tmp_path / "staged", progress=False)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "trained"
    evaluate_run(run_dir, progress=False)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    staged = json.loads((run_dir / "experiment_1" / "metrics.json").read_text())["metrics"]
    direct = json.loads((first / "experiment_1" / "metrics.json").read_text())["metrics"]
    assert staged == direct
    assert pd.read_parquet(run_dir / "experiment_1" / "scores.parquet").equals(pd.read_parquet(first / "experiment_1" / "scores.parquet"))


def test_run_name_must_be_one_path_component(tmp_path):
    for name in ("../../x", "/abs/olute", "a/b", "..", ""):
        with pytest.raises(ConfigError, match="name"):
            _config(tmp_path, name=name)


def test_exit_status_of_the_run_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from twotower.cli import app

    cfg = _config(
        tmp_path,
        experiments=[
            {"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-03", "val_date": "2022-05-04"},
            {"id": 2, "train_start": "2023-01-01", "train_end": "2023-01-07", "val_date": "2023-01-08"},
        ],
    )
    write_resolved_config(cfg, tmp_path / "two.toml")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "two.toml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "failed: experiment(s) 2" in result.output
    one = cfg.model_copy(update={"experiments": cfg.experiments[:1]})
    write_resolved_config(one, tmp_path / "one.toml")
    assert CliRunner().invoke(app, ["run", str(tmp_path / "one.toml"), "--out", str(tmp_path / "runs")]).exit_code == 0
    (tmp_path / "a_file").write_text("x")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "one.toml"), "--out", str(tmp_path / "a_file")])
    assert result.exit_code == 2 and "is a file" in result.output


def test_kuairand_without_user_features_fails_before_any_work(tmp_path):
    data = tmp_path / "kuairand"
    data.mkdir()
    for name in ("log_standard_4_25_to_5_04_pure.csv", "video_features_basic_pure.csv"):
        (data / name).write_text("user_id\n")
    cfg = parse_config(
        {
            "name": "k",
            "data": {"adapter": "kuairand", "path": str(data)},
            "experiments": [{"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-01", "val_date": "2022-05-02"}],
        }
    )
    with pytest.raises(DataError, match="no user_features_\\*.csv, which model.user_features 'user_static' needs"):
        run(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()  # nothing started
