"""End to end on the hand-built log: a series of two seeds logged to MLflow, an identical rerun, and compare
(library and CLI) on the directories and on the MLflow ids."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.cli import app
from twotower.commands.experiments import _seed_list
from twotower.compare import compare_runs
from twotower.compare.sources import compare_sources
from twotower.compare.table import markdown
from twotower.config import load_config
from twotower.pipeline import run
from twotower.series import run_series


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("series")
    events, items = write_tiny_log(tmp / "data")
    raw = tiny_config_dict(events, items)
    users = tmp / "data" / "users.csv"
    pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "register_days": [10, 200, 35, 800, 4, 90]}).to_csv(users, index=False)
    raw["data"]["users_path"] = str(users)
    raw["content"] = {"encoder": "metadata", "pca_components": 2, "cache_dir": str(tmp / "cache")}
    raw["train"] = {"epochs": 2, "batch_size": 2}
    raw["model"] = {"hidden": [16], "output_dim": 8}
    config = tmp / "tiny.toml"
    config.write_text(tomli_w.dumps(raw))
    uri = (tmp / "mlruns").as_uri()
    result = run_series([config], seeds=[7, 8], out_root=tmp / "runs", overrides=[f"tracking.mlflow_uri={json.dumps(uri)}"], progress=False)
    rerun = run(load_config(config, overrides=["seed=7"]), tmp / "runs", progress=False)  # same config, same seed
    return result, rerun, uri, tmp


def _model_metrics(run_dir):
    return json.loads((run_dir / "experiment_1" / "metrics.json").read_text())["metrics"]["model"]


def test_series_runs_every_seed_and_writes_per_user_files(series):
    result, _, _, tmp = series
    seven, eight = result.run_dirs
    assert [json.loads((d / "summary.json").read_text())["config"] for d in result.run_dirs] == ["tiny", "tiny"]
    assert "seed = 7" in (seven / "config.toml").read_text() and "seed = 8" in (eight / "config.toml").read_text()
    frame = pd.read_parquet(seven / "experiment_1" / "per_user.parquet")
    assert set(frame["scorer"]) == {"model", "random", "popularity", "item_prior"}
    model = frame[(frame["scorer"] == "model") & (frame["status"] == "evaluated")]
    assert len(model) == 2 and model["n"].sum() == 5  # the tiny evaluation set: 2 users, 5 rows
    for name in ("auc", "map", "mrr", "ndcg@10"):
        assert model[name].mean() == pytest.approx(_model_metrics(seven)[name])
    # the series' comparison: one config, two seeds -> one row, mean ± sd over the seeds
    (row,) = result.comparison.rows
    assert row.label == "tiny" and row.seeds == [7, 8] and row.is_reference
    aucs = [_model_metrics(d)["auc"] for d in result.run_dirs]
    assert row.metrics["auc"] == (pytest.approx(np.mean(aucs)), pytest.approx(np.std(aucs, ddof=1)))
    assert result.directory.parent == tmp / "runs" / "_series"
    assert {p.name for p in result.files} >= {"compare.md", "compare.json"}


def test_two_seeds_compared_run_by_run(series):
    result, _, _, _ = series
    comparison = compare_runs(result.run_dirs, per_run=True, resamples=500)
    reference, other = comparison.rows
    assert (reference.label, other.label) == ("tiny", "tiny [2]") and other.seeds == [8]
    assert other.played_users == {1: 2} and other.catalog_users == {}
    diff = other.differences["auc"].interval
    assert diff.estimate == pytest.approx(_model_metrics(result.run_dirs[1])["auc"] - _model_metrics(result.run_dirs[0])["auc"])
    assert diff.low <= diff.estimate <= diff.high and diff.n_users == (2,)
    assert other.differences["recall@100"].interval is None  # the tiny log's catalog retrieval evaluates nobody (every target was seen): n/a
    lines = markdown(comparison).splitlines()
    assert lines[2].startswith("| config | seeds | experiments | auc | ndcg@10 | map | mrr | recall@all_pos | catalog recall@100 |")
    assert lines[4].startswith("| tiny | 7 | 1 |") and "| 2 | n/a | reference |" in lines[4]
    assert lines[5].startswith("| tiny [2] | 8 | 1 |") and "| 2 | n/a | " in lines[5]


def test_identical_runs_differ_by_exactly_zero(series):
    result, rerun, _, _ = series
    comparison = compare_runs([result.run_dirs[0], rerun], per_run=True)
    for metric in ("auc", "ndcg@10", "map"):
        i = comparison.rows[1].differences[metric].interval
        assert (i.estimate, i.low, i.high) == (0.0, 0.0, 0.0) and not i.excludes_zero


def test_compare_from_mlflow_ids_equals_compare_from_directories(series, monkeypatch):
    from mlflow.tracking import MlflowClient

    result, _, uri, _ = series
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("twotower").experiment_id], filter_string="tags.`twotower.kind` = 'run'"
    )
    by_dir = {p.data.tags["twotower.run_dir"]: p.info.run_id for p in parents}
    ids = [by_dir[str(d.resolve())] for d in result.run_dirs]
    child = client.search_runs([parents[0].info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{ids[0]}'")
    assert child[0].data.metrics["model.auc"] == pytest.approx(_model_metrics(result.run_dirs[0])["auc"])
    from_mlflow = compare_sources([f"mlflow:{i}" for i in ids], mlflow_uri=uri, per_run=True, resamples=500)
    from_dirs = compare_runs(result.run_dirs, per_run=True, resamples=500)
    # the table is the same; only the notes and the JSON's "runs" name the sources (paths or mlflow:<id>)
    assert markdown(from_mlflow).split("Notes:")[0] == markdown(from_dirs).split("Notes:")[0]
    rows = [{k: v for k, v in r.items() if k != "runs"} for r in from_dirs.as_dict()["rows"]]
    assert [{k: v for k, v in r.items() if k != "runs"} for r in from_mlflow.as_dict()["rows"]] == rows


def test_cli_compare_prints_writes_and_refuses(series, tmp_path):
    result, rerun, _, _ = series
    runner = CliRunner()
    out = tmp_path / "cmp"
    done = runner.invoke(app, ["compare", str(result.run_dirs[0]), str(rerun), "--per-run", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "| tiny [2] | 7 | 1 |" in done.output and "+0.0000 [+0.0000, +0.0000]" in done.output
    assert (out / "compare.md").read_text() in done.output and (out / "compare.json").is_file()
    refused = runner.invoke(app, ["compare", str(result.run_dirs[0]), str(tmp_path)])
    assert refused.exit_code == 2 and "error:" in refused.output and "neither a run directory" in refused.output


def test_seed_list_accepts_both_spellings(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text("")
    assert _seed_list("0,1,2", [str(config)]) == ([0, 1, 2], [str(config)])
    # `--seeds 0 1 2`: the shell leaves 1 and 2 among the CONFIG arguments
    assert _seed_list("0", [str(config), "1", "2"]) == ([0, 1, 2], [str(config)])
    assert _seed_list(None, [str(config)]) == (None, [str(config)])
