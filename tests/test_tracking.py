"""MLflow tracking into a temporary file store, read back with MLflow's own client; compare from MLflow ids."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from tests.runfiles import write_run  # noqa: E402
from twotower.compare import compare_runs  # noqa: E402
from twotower.compare.rundata import CompareError  # noqa: E402
from twotower.compare.sources import compare_sources  # noqa: E402
from twotower.compare.table import markdown  # noqa: E402
from twotower.tracking import TrackingError, download_run, log_run, mlflow_name, normalize_uri  # noqa: E402


def _client(uri: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to read a file store
    return MlflowClient(tracking_uri=uri)


def _full_run(tmp_path, name="base", seed=0, auc=(0.5, 0.6)):
    """A hand-built run with two experiments and the files tracking logs (and some it must not)."""
    played = {1: {1: auc[0], 2: auc[0] + 0.2}, 2: {1: auc[1], 2: auc[1], 3: auc[1]}}
    run = write_run(tmp_path / "runs", name, seed=seed, played=played, catalog={1: {1: 0.25, 2: 0.75}}, stamp=f"s{seed}")
    (run / "tables.md").write_text("# tables\n")
    exp = run / "experiment_1"
    metrics = json.loads((exp / "metrics.json").read_text())
    metrics["training"] = {"best_epoch": 2, "train_loss": [0.7, 0.6, 0.65], "holdout_auc": [0.55, 0.6, 0.58]}
    (exp / "metrics.json").write_text(json.dumps(metrics))
    (exp / "model.pt").write_bytes(b"\x00checkpoint")
    (exp / "item_embeddings.parquet").write_bytes(b"large")
    (exp / "prepared").mkdir()
    (exp / "prepared" / "funnel.json").write_text("{}")
    (exp / "prepared" / "train.parquet").write_bytes(b"large")
    return run


def test_names_mlflow_accepts():
    assert mlflow_name("model.ndcg@10") == "model.ndcg_at_10"
    assert mlflow_name("retrieval.tail_recall@10[3]") == "retrieval.tail_recall_at_10_3_"
    assert mlflow_name("experiments.0.val_date") == "experiments.0.val_date"


def test_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_uri("file:./mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert normalize_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert normalize_uri("http://localhost:5000") == "http://localhost:5000"


def test_log_run_reads_back_with_mlflows_client(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = _full_run(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    parent_id = log_run(run, uri, experiment="series")
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the opt-in is scoped to the call
    client = _client(uri, monkeypatch)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "base s0"
    assert client.get_experiment(parent.info.experiment_id).name == "series"
    params = parent.data.params
    assert params["name"] == "base" and params["seed"] == "0" and params["label.fraction_watch_above"] == "0.9"
    assert params["experiments.1.val_date"] == "2022-05-05"
    # parent metrics: the mean over the two experiments of each experiment's metrics
    assert parent.data.metrics["model.auc"] == pytest.approx(((0.5 + 0.7) / 2 + 0.6) / 2)
    assert parent.data.metrics["model.ndcg_at_10"] == pytest.approx(((0.25 + 0.35) / 2 + 0.3) / 2)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    by_exp = {c.data.tags["twotower.experiment"]: c for c in children}
    assert sorted(by_exp) == ["1", "2"] and all(c.info.status == "FINISHED" for c in children)
    assert by_exp["2"].data.metrics["model.auc"] == pytest.approx(0.6)
    assert by_exp["1"].data.metrics["training.best_epoch"] == 2
    history = client.get_metric_history(by_exp["1"].info.run_id, "training.train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.7), (2, 0.6), (3, 0.65)]
    top = {a.path for a in client.list_artifacts(parent_id)}
    assert {"config.toml", "status.json", "summary.json", "tables.md"} <= top
    child = by_exp["1"].info.run_id
    files = {a.path for a in client.list_artifacts(child)} | {a.path for a in client.list_artifacts(child, "prepared")}
    assert {"metrics.json", "per_user.parquet", "retrieval_per_user.parquet", "model.pt", "prepared/funnel.json"} <= files
    assert "item_embeddings.parquet" not in files and "prepared/train.parquet" not in files


def test_download_gives_back_the_run_directory_layout(tmp_path):
    run = _full_run(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    copy = download_run(uri, log_run(run, uri), tmp_path / "copy")
    for path in ("config.toml", "experiment_1/per_user.parquet", "experiment_2/metrics.json", "experiment_1/model.pt"):
        assert (copy / path).read_bytes() == (run / path).read_bytes(), path
    pd.testing.assert_frame_equal(
        pd.read_parquet(copy / "experiment_1/retrieval_per_user.parquet"), pd.read_parquet(run / "experiment_1/retrieval_per_user.parquet")
    )


def test_compare_from_mlflow_ids_equals_compare_from_directories(tmp_path):
    a = _full_run(tmp_path, "base", seed=0)
    b = _full_run(tmp_path, "better", seed=0, auc=(0.55, 0.62))
    uri = (tmp_path / "mlruns").as_uri()
    ids = [log_run(a, uri), log_run(b, uri)]
    from_dirs = compare_runs([a, b], resamples=300)
    from_mlflow = compare_sources([f"mlflow:{i}" for i in ids], mlflow_uri=uri, resamples=300)
    assert markdown(from_mlflow) == markdown(from_dirs)
    strip = [{k: v for k, v in r.items() if k != "runs"} for r in from_dirs.as_dict()["rows"]]
    assert [{k: v for k, v in r.items() if k != "runs"} for r in from_mlflow.as_dict()["rows"]] == strip
    assert from_mlflow.rows[1].sources == [f"mlflow:{ids[1]}"]
    assert from_dirs.rows[1].differences["auc"].interval.estimate == pytest.approx(((0.05 + 0.05) / 2 + 0.02) / 2)
    # a reference given as an MLflow id, mixed with a directory
    mixed = compare_sources([str(a), f"mlflow:{ids[1]}"], reference=f"mlflow:{ids[1]}", mlflow_uri=uri, resamples=300)
    assert mixed.reference == "better" and mixed.rows[0].is_reference


def test_errors_name_the_run(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    running = write_run(tmp_path / "runs", "busy", state="running")
    with pytest.raises(TrackingError, match="not finished \\(state: running\\)"):
        log_run(running, uri)
    with pytest.raises(TrackingError, match="no MLflow run 'abc'"):
        download_run(uri, "abc", tmp_path / "x")
    with pytest.raises(CompareError, match="add --mlflow URI"):
        compare_sources(["mlflow:abc"])
    client = _client(uri, monkeypatch)
    other = client.create_run(client.create_experiment("other")).info.run_id
    with pytest.raises(TrackingError, match="is not a twotower run"):
        download_run(uri, other, tmp_path / "y")
