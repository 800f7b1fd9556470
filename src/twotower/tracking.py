"""Experiment tracking with MLflow, from a finished run directory's files (no pipeline internals).

``log_run(run_dir, uri)`` logs one run as a parent MLflow run with one nested run per experiment:

- parent: params = the resolved ``config.toml`` flattened (``model.hidden``, ``experiments.0.val_date``),
  metrics = the mean over completed experiments of each experiment metric, artifacts = the run's
  top-level files (``config.toml``, ``tables.md``, ``summary.json``, ``status.json``, plots);
- each experiment: params = its id and days, metrics = ``metrics.json`` (``<scorer>.<metric>``; training
  loss and held-out metric per epoch as steps) and ``retrieval.json`` when present (``retrieval.<...>``),
  artifacts = its top-level files (metrics, per-user files, scores, the checkpoint, plots) and
  ``prepared/funnel.json``; not the prepared data, ``item_embeddings.parquet`` or ``topk.parquet`` (large,
  and rebuilt by rerunning ``config.toml``).

MLflow rejects ``@`` (and ``[``, ``]``) in names: ``ndcg@10`` is logged as ``ndcg_at_10``. A plain path or
``file:`` URI is a local file store (relative to the working directory); MLflow 3 asks file-store users
to opt in (``MLFLOW_ALLOW_FILE_STORE``), which is done here for such URIs only. ``download_run`` puts a
logged run back into the run-directory layout, so ``compare`` reads MLflow runs like directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twotower.config_files import flatten

KIND_TAG, CONFIG_TAG, EXPERIMENT_TAG, PARENT_TAG = "twotower.kind", "twotower.config", "twotower.experiment", "mlflow.parentRunId"
SKIPPED_FILES = ("item_embeddings.parquet", "topk.parquet")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value


class TrackingError(ValueError):
    """Tracking could not log or read a run; the message names the URI or run and what to do."""


def mlflow_name(name: str) -> str:
    """A metric or parameter name MLflow accepts: ``@`` -> ``_at_``, other characters outside
    ``[A-Za-z0-9_./ :-]`` -> ``_``."""
    return re.sub(r"[^\w./ :-]", "_", name.replace("@", "_at_"))


def normalize_uri(uri: str) -> str:
    """A tracking URI with a local store made absolute: ``./mlruns`` and ``file:./mlruns`` -> ``file:///...``."""
    if uri.startswith("file:") and not uri.startswith("file://"):
        return Path(uri.removeprefix("file:")).expanduser().resolve().as_uri()
    if ":" not in uri:  # a plain path
        return Path(uri).expanduser().resolve().as_uri()
    return uri


@contextlib.contextmanager
def _mlflow_env(uri: str) -> Iterator[None]:
    """Environment MLflow reads while we use it: the file-store opt-in (file URIs only), no progress bars."""
    wanted = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if uri.startswith("file:"):
        wanted["MLFLOW_ALLOW_FILE_STORE"] = "true"
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def config_params(run_dir: Path) -> dict[str, str]:
    """The resolved config as MLflow params (values as text, cut at MLflow's limit)."""
    config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    return {mlflow_name(k): str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(config).items()}


def _numbers(payload: Any, prefix: str) -> dict[str, float]:
    return {
        mlflow_name(f"{prefix}{k}"): float(v)
        for k, v in flatten(payload).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def experiment_metrics(directory: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """``(metrics, per-epoch series)`` of one experiment directory from its metrics.json / retrieval.json."""
    metrics: dict[str, float] = {}
    series: dict[str, list[float]] = {}
    if (directory / "metrics.json").is_file():
        payload = json.loads((directory / "metrics.json").read_text())
        metrics.update(_numbers(payload.get("metrics", {}), ""))
        training = payload.get("training") or {}
        for key, value in training.items():
            if isinstance(value, list):
                series[mlflow_name(f"training.{key}")] = [float(v) for v in value if v is not None]
        metrics.update(_numbers({k: v for k, v in training.items() if not isinstance(v, list)}, "training."))
    if (directory / "retrieval.json").is_file():
        payload = json.loads((directory / "retrieval.json").read_text())
        metrics.update(_numbers(payload.get("metrics", payload), "retrieval."))
    return metrics, series


def _state(directory: Path, default: str) -> str:
    try:
        return json.loads((directory / "status.json").read_text()).get("state", default)
    except (OSError, ValueError):
        return default


def _experiment_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(p.name.removeprefix("experiment_")), p) for p in run_dir.glob("experiment_*") if p.is_dir()]
    return sorted(found)


def _log_files(client, run_id: str, directory: Path, skip: tuple[str, ...] = ()) -> None:
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in skip:
            client.log_artifact(run_id, str(path))


def log_run(run_dir: Path, uri: str, experiment: str = "twotower") -> str:
    """Log a finished run directory to MLflow at ``uri`` (module docstring); returns the parent run id."""
    from mlflow.exceptions import MlflowException

    run_dir = Path(run_dir)
    state = _state(run_dir, "completed" if (run_dir / "summary.json").is_file() else "running")
    if state == "running":
        raise TrackingError(f"{run_dir} is not finished (state: running); log a completed or failed run")
    uri = normalize_uri(uri)
    with _mlflow_env(uri):
        try:
            return _log(_client(uri), run_dir, state, experiment)
        except MlflowException as exc:
            message = str(exc).splitlines()[0]
            raise TrackingError(f"MLflow at {uri} refused to log {run_dir}: {message}") from None


def _log(client, run_dir: Path, state: str, experiment: str) -> str:
    """The parent run, then one nested run per experiment directory; returns the parent's id."""
    from mlflow.entities import Metric, Param

    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    params = config_params(run_dir)
    name = params.get("name", run_dir.parent.name)
    tags = {KIND_TAG: "run", CONFIG_TAG: name, "twotower.seed": params.get("seed", "0"), "twotower.run_dir": str(run_dir.resolve())}
    parent = client.create_run(experiment_id, run_name=f"{name} {run_dir.name}", tags=tags).info.run_id
    client.log_batch(parent, params=[Param(k, v) for k, v in params.items()])
    completed = [
        metrics
        for exp_id, directory in _experiment_dirs(run_dir)
        if (metrics := _log_experiment(client, experiment_id, parent, exp_id, directory)) is not None
    ]
    common = set.intersection(*(set(m) for m in completed)) if completed else set()
    now = int(time.time() * 1000)
    means = [Metric(k, sum(m[k] for m in completed) / len(completed), now, 0) for k in sorted(common)]
    client.log_batch(parent, metrics=means)
    _log_files(client, parent, run_dir)
    client.set_terminated(parent, "FINISHED" if state == "completed" else "FAILED")
    return parent


def _log_experiment(client, experiment_id: str, parent: str, exp_id: int, directory: Path) -> dict[str, float] | None:
    """One experiment as a run nested under ``parent``; its metrics when it completed, else None."""
    from mlflow.entities import Metric, Param

    state = _state(directory, "completed" if (directory / "metrics.json").is_file() else "failed")
    tags = {PARENT_TAG: parent, KIND_TAG: "experiment", EXPERIMENT_TAG: str(exp_id)}
    child = client.create_run(experiment_id, run_name=directory.name, tags=tags).info.run_id
    metrics, series = experiment_metrics(directory)
    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, 0) for k, v in metrics.items()]
    batch += [Metric(k, v, now, step) for k, values in series.items() for step, v in enumerate(values, start=1)]
    client.log_batch(child, metrics=batch, params=[Param("experiment", str(exp_id))])
    _log_files(client, child, directory, SKIPPED_FILES)
    if (directory / "prepared" / "funnel.json").is_file():
        client.log_artifact(child, str(directory / "prepared" / "funnel.json"), "prepared")
    client.set_terminated(child, "FINISHED" if state == "completed" else "FAILED")
    return metrics if state == "completed" else None


def download_run(uri: str, run_id: str, destination: Path) -> Path:
    """Download a parent run logged by ``log_run`` into ``destination`` in the run-directory layout
    (its files, and each nested experiment run's files under ``experiment_<id>/``); returns it."""
    from mlflow.exceptions import MlflowException

    uri = normalize_uri(uri)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with _mlflow_env(uri):
        client = _client(uri)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"no MLflow run {run_id!r} at {uri}") from None
        if run.data.tags.get(KIND_TAG) != "run":
            raise TrackingError(f"MLflow run {run_id} at {uri} is not a twotower run (log one with `twotower run --mlflow`)")
        client.download_artifacts(run_id, "", str(destination))
        children = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'")
        for child in children:
            target = destination / f"experiment_{child.data.tags[EXPERIMENT_TAG]}"
            target.mkdir(exist_ok=True)
            client.download_artifacts(child.info.run_id, "", str(target))
    return destination
