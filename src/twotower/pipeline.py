"""``twotower run``: the whole experiment flow as a short sequence of plain function calls.

For every experiment of the config, in ``runs/<config name>/<timestamp>/experiment_<id>/``:

    prepare (or reuse) → content table (or reuse) → train → evaluate → metrics.json

then the run's tables and plots from those files. A failing experiment is reported as ``Failed: <reason>``
and the others still run. Every stage leaves a complete file or none (``twotower.io``), and the run and
each experiment carry a ``status.json`` (``twotower.runs``), so an interrupted run can be finished with
``resume`` and never passes for a complete one. The stage functions are also the ``train`` and
``evaluate`` commands.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import traceback
from functools import partial
from pathlib import Path

import pandas as pd

from twotower.checkpoint import load_checkpoint
from twotower.config import Config, ExperimentConfig, load_config, write_resolved_config
from twotower.content.item_table import (
    build_item_table,
    check_content,
    read_item_table_frame,
    write_item_table,
)
from twotower.data.ingest import check_data_path
from twotower.data.prepare import prepare_experiment
from twotower.data.prepared import PreparedTables, is_complete
from twotower.data.validate import DataError
from twotower.distributed import Distributed, on_main
from twotower.evaluate.per_user import played_per_user, write_per_user
from twotower.evaluate.played import evaluate_played
from twotower.inference import score
from twotower.io import write_atomic, write_json, write_text
from twotower.outcome import ExperimentOutcome, read_outcome, write_metrics_json
from twotower.progress import say
from twotower.report import write_report
from twotower.retrieval.evaluate import evaluate_retrieval
from twotower.reuse import cache_dir, content_key, link_files, prepare_key, publish
from twotower.runs import (
    COMPLETED,
    FAILED,
    RUNNING,
    TRAINED,
    RunError,
    new_run_dir,
    now,
    read_status,
    write_status,
)
from twotower.stream.files import ExampleFiles
from twotower.tracking import log_run
from twotower.train import TrainResult, train_model
from twotower.train_data import read_for_training

CONFIG_FILE = "config.toml"
REUSE_KEY = "reuse_key.txt"
TRAINING_FILE = "training.json"


class ExperimentFailed(RuntimeError):
    """An experiment that cannot produce results, with the reason people read in the table."""


def experiment_dir(run_dir: Path, exp: ExperimentConfig) -> Path:
    return run_dir / f"experiment_{exp.id}"


# ---- stages ----------------------------------------------------------------------------------------


def prepare_stage(cfg: Config, exp: ExperimentConfig, directory: Path, progress: bool, reuse: bool) -> Path:
    """``directory/prepared``: kept when complete (resume), else linked from the cache when the inputs are
    unchanged, else prepared (and published to the cache)."""
    out = directory / "prepared"
    if is_complete(out):
        return out
    if out.exists():  # an interrupted prepare of this run: start it again
        shutil.rmtree(out)
    key = prepare_key(cfg, exp)
    cached = cache_dir(cfg, "prepared", key)
    if reuse and is_complete(cached):
        link_files(cached, out)
        say(f"experiment {exp.id}: reusing prepared data {cached} (its inputs are unchanged)", enabled=progress)
        return out
    result = prepare_experiment(cfg, exp, out, progress=progress)
    say(f"\nexperiment {exp.id}: funnel\n{result.funnel.table()}\n", enabled=progress)
    write_text(out / REUSE_KEY, key + "\n")
    if reuse:
        publish(out, cached)
    return out


def check_evaluation_set(data: PreparedTables, exp: ExperimentConfig) -> None:
    """An empty evaluation set fails the experiment, saying why (the funnel is already written)."""
    if len(data.eval):
        return
    left_out = data.funnel.get("notes", {}).get("evaluation users left out", {})
    why = ", ".join(f"{n:,} {reason}" for reason, n in left_out.items()) or "nobody played that day"
    raise ExperimentFailed(f"empty evaluation set (no user with a positive and a negative row on {exp.val_date}: {why})")


def content_stage(cfg: Config, data: PreparedTables, directory: Path, progress: bool, reuse: bool) -> pd.DataFrame:
    """The content table ``directory/item_embeddings.parquet``: kept when present (resume), else linked from
    the cache, else built from the prepared items (PCA fitted on training-window items)."""
    path = directory / "item_embeddings.parquet"
    report_path = directory / "item_embeddings.json"
    if not path.exists():
        cached = cache_dir(cfg, "item_tables", content_key(cfg, prepare_key_of(directory)))
        if reuse and (cached / path.name).exists():
            link_files(cached, directory)
            say(f"reusing the content table {cached} (its inputs are unchanged)", enabled=progress)
        else:
            train_items = data.items.loc[data.items["in_train"], "item_id"].to_numpy()
            table, report = build_item_table(cfg, data.items, train_items, progress=progress)
            write_json(report_path, report)
            write_item_table(table, path)
            if reuse:
                staging = directory / ".item_table"
                staging.mkdir(exist_ok=True)
                for name in (path.name, report_path.name):
                    shutil.copy2(directory / name, staging / name)
                publish(staging, cached)
                shutil.rmtree(staging, ignore_errors=True)
    return read_item_table_frame(path)


def prepare_key_of(directory: Path) -> str:
    """The cache key the run's prepared data was made under (prepared/reuse_key.txt)."""
    marker = directory / "prepared" / REUSE_KEY
    return marker.read_text().strip() if marker.exists() else "unkeyed"


def train_stage(
    cfg: Config, data: PreparedTables, item_table: pd.DataFrame, directory: Path, progress: bool, dist: Distributed | None = None
) -> TrainResult:
    """Train into ``directory`` (model.pt) and record the result in training.json; a finished training
    (both files present: resume) is kept. ``train.shuffle_buffer`` > 0 streams train.parquet and
    history.parquet from the prepared directory. ``dist``: one process among several (rank 0 writes)."""
    record = directory / TRAINING_FILE
    if record.exists() and (directory / "model.pt").exists():
        return read_training(directory)
    catalog = data.read_extra("catalog") if cfg.train.objective == "softmax" else None
    streamed = cfg.train.shuffle_buffer > 0
    rows = ExampleFiles.prepared(data.directory) if streamed else data.train
    training = train_model(
        cfg.model, cfg.train, rows, None if streamed else data.history, data.users, item_table, directory, seed=cfg.seed,
        progress=progress, catalog=catalog, resume=True, dist=dist,  # resume: continue from train_state.pt when one is there
    )
    if dist is None or dist.is_main:
        write_json(record, {**dataclasses.asdict(training), "model_path": training.model_path.name})
    return training


def read_training(directory: Path) -> TrainResult:
    """The TrainResult recorded by the train stage in ``directory``."""
    record = json.loads((directory / TRAINING_FILE).read_text())
    return TrainResult(**{**record, "model_path": directory / record["model_path"]})


def evaluate_stage(
    cfg: Config, exp: ExperimentConfig, directory: Path, data: PreparedTables, training: TrainResult, seconds: float
) -> dict:
    """Score the evaluation set with the trained model and evaluate it beside the baselines (played
    re-ranking: scores.parquet, metrics.json), then retrieve from the whole catalog (retrieval.json and its
    files); returns the metrics.json payload."""
    bundle = load_checkpoint(training.model_path)
    scores = score(bundle, data.eval, data.history, data.users)
    frame = data.eval.assign(score=scores)[["user_id", "item_id", "label", "score"]]
    write_atomic(directory / "scores.parquet", lambda tmp: frame.to_parquet(tmp))
    played = evaluate_played(data.eval, scores, data.popularity, cfg.seed, data.history)
    write_per_user(directory / "per_user.parquet", played_per_user(data.eval, scores, data.popularity, cfg.seed, played.metrics))
    table_path = directory / "item_embeddings.parquet"
    item_table = read_item_table_frame(table_path) if table_path.exists() else None
    evaluate_retrieval(cfg, bundle, data, item_table, directory)
    content = directory / "item_embeddings.json"
    notes = {"funnel": data.funnel, "content": json.loads(content.read_text()) if content.exists() else {}}
    return write_metrics_json(directory, exp, seconds, played, training, notes)


# ---- the flow --------------------------------------------------------------------------------------


def run_experiment(cfg: Config, exp: ExperimentConfig, directory: Path, progress: bool = True, reuse: bool = True) -> None:
    """Prepare, build the content table, train and evaluate one experiment into ``directory``."""
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    write_status(directory, RUNNING, started=now())
    prepared = prepare_stage(cfg, exp, directory, progress, reuse)
    data = PreparedTables.read(prepared)
    check_evaluation_set(data, exp)
    item_table = content_stage(cfg, data, directory, progress, reuse)
    training = train_stage(cfg, data, item_table, directory, progress)
    evaluate_stage(cfg, exp, directory, data, training, time.perf_counter() - started)
    write_status(directory, COMPLETED, finished=now())


def run_experiments(cfg: Config, run_dir: Path, progress: bool = True, reuse: bool = True) -> list[ExperimentOutcome]:
    """Every experiment not completed yet (a fresh run: all of them), one failure not stopping the others;
    then the report and the run's status. Returns every experiment's outcome."""
    outcomes = []
    for exp in cfg.experiments:
        directory = experiment_dir(run_dir, exp)
        if read_status(directory).get("state") != COMPLETED:
            try:
                run_experiment(cfg, exp, directory, progress=progress, reuse=reuse)
            except Exception as exc:  # one failing experiment must not stop the others; its reason is reported
                reason = str(exc) if isinstance(exc, ExperimentFailed) else f"{type(exc).__name__}: {exc}"
                write_text(directory / "error.txt", traceback.format_exc())
                write_status(directory, FAILED, reason=reason.splitlines()[0] if reason else type(exc).__name__, finished=now())
        outcomes.append(read_outcome(exp, directory))
    print(write_report(cfg, outcomes, run_dir))
    failed = [o.experiment.id for o in outcomes if not o.completed]
    write_status(run_dir, FAILED if failed else COMPLETED, finished=now(), failed_experiments=failed)
    print(f"\nrun directory: {run_dir}")
    return outcomes


def check_inputs(cfg: Config) -> None:
    """Before any experiment: the data is there, the content encoder can give pca_components dimensions
    from its files, and a feature group's table exists (user_static: KuaiRand's user_features file)."""
    check_data_path(cfg.data)
    check_content(cfg.content)
    data = cfg.data
    kuairand_dir = data.adapter == "kuairand" and Path(data.path).is_dir()
    if kuairand_dir and "user_static" in cfg.model.user_features and not any(Path(data.path).glob("user_features_*.csv")):
        raise DataError(
            f"{data.path} has no user_features_*.csv, which model.user_features 'user_static' needs; "
            "add the file or remove 'user_static'"
        )


def run(cfg: Config, out_root: Path = Path("runs"), progress: bool = True, reuse: bool = True) -> Path:
    """Run every experiment of ``cfg`` in a fresh run directory; write and print the sheet's tables.
    Returns the run directory (its ``status.json`` says whether every experiment completed)."""
    check_inputs(cfg)
    run_dir = new_run_dir(out_root, cfg.name)
    write_resolved_config(cfg, run_dir / CONFIG_FILE)
    run_experiments(cfg, run_dir, progress=progress, reuse=reuse)
    if cfg.tracking.mlflow_uri:  # logged from the finished directory's files
        parent = log_run(run_dir, cfg.tracking.mlflow_uri, cfg.tracking.experiment)
        say(f"mlflow run {parent} at {cfg.tracking.mlflow_uri}", enabled=progress)
    return run_dir


def resume(run_dir: Path, progress: bool = True, reuse: bool = True) -> Path:
    """Finish an interrupted (or failed) run in place: completed experiments are kept, the others restart
    from their last complete stage (prepared data, content table, training state)."""
    state = read_status(run_dir).get("state")
    if state == COMPLETED:
        raise RunError(f"{run_dir} is already completed; nothing to resume")
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} has no {CONFIG_FILE}; is it a twotower run directory?")
    cfg = load_config(run_dir / CONFIG_FILE)
    check_inputs(cfg)
    write_status(run_dir, RUNNING, resumed=now())
    run_experiments(cfg, run_dir, progress=progress, reuse=reuse)
    return run_dir


# ---- stage commands: `twotower train` and `twotower evaluate` -----------------------------------------


def train_run(
    cfg: Config,
    prepared_root: Path,
    out_root: Path = Path("runs"),
    items: Path | None = None,
    experiment_ids: list[int] | None = None,
    progress: bool = True,
    dist: Distributed | None = None,
) -> Path:
    """``twotower train``: a fresh run directory whose experiments are trained on already prepared data
    (``prepared_root/experiment_<id>``, as ``prepare --out`` writes it) and, with ``items``, a given
    content table; ``evaluate`` then completes it with the same files ``run`` writes. With ``dist``
    (under torchrun), every rank trains and rank 0 alone writes the run directory; a streamed training
    (``train.shuffle_buffer`` > 0) leaves train.parquet and history.parquet on disk."""
    main = dist is None or dist.is_main
    run_dir = new_run_dir(out_root, cfg.name) if main else None
    run_dir = dist.share(run_dir) if dist is not None else run_dir
    if main:
        write_resolved_config(cfg, run_dir / CONFIG_FILE)
    for exp in cfg.selected(experiment_ids):
        directory = experiment_dir(run_dir, exp)
        source = Path(prepared_root) / f"experiment_{exp.id}"
        data = read_for_training(source) if cfg.train.shuffle_buffer > 0 else PreparedTables.read(source)
        check_evaluation_set(data, exp)
        if main:
            link_files(source, directory / "prepared")
            write_status(directory, RUNNING, started=now())
            if items is not None:
                shutil.copy2(items, directory / "item_embeddings.parquet")
        item_table = on_main(dist, partial(content_stage, cfg, data, directory, progress, reuse=False))
        if not main:  # rank 0 wrote it
            item_table = read_item_table_frame(directory / "item_embeddings.parquet")
        train_stage(cfg, data, item_table, directory, progress, dist)
        if main:
            write_status(directory, TRAINED, finished=now())
    if main:
        write_status(run_dir, TRAINED, finished=now())
        say(f"trained; evaluate with: twotower evaluate {run_dir}", enabled=progress)
    return run_dir


def evaluate_run(run_dir: Path, prepared_root: Path | None = None, progress: bool = True) -> list[ExperimentOutcome]:
    """``twotower evaluate RUN_DIR``: evaluate every trained experiment of a run directory on its own
    prepared data (or ``prepared_root/experiment_<id>``), write the evaluation files and the report."""
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} has no {CONFIG_FILE}; is it a twotower run directory?")
    cfg = load_config(run_dir / CONFIG_FILE)
    outcomes = []
    for exp in cfg.experiments:
        directory = experiment_dir(run_dir, exp)
        if (directory / TRAINING_FILE).exists() and (directory / "model.pt").exists():
            started = time.perf_counter()
            source = Path(prepared_root) / f"experiment_{exp.id}" if prepared_root else directory / "prepared"
            data = PreparedTables.read(source)
            evaluate_stage(cfg, exp, directory, data, read_training(directory), time.perf_counter() - started)
            write_status(directory, COMPLETED, finished=now())
        outcomes.append(read_outcome(exp, directory))
    say(write_report(cfg, outcomes, run_dir), enabled=progress)
    failed = [o.experiment.id for o in outcomes if not o.completed]
    write_status(run_dir, FAILED if failed else COMPLETED, finished=now(), failed_experiments=failed)
    return outcomes


def evaluate_checkpoint(
    checkpoint: Path, cfg: Config, experiment_id: int | None, prepared_root: Path, out_root: Path = Path("runs")
) -> Path:
    """``twotower evaluate CHECKPOINT --config CONFIG``: a fresh run directory holding the checkpoint as the
    given experiment's model, evaluated on ``prepared_root/experiment_<id>``."""
    if experiment_id is None and len(cfg.experiments) > 1:
        raise RunError(f"{checkpoint}: say which experiment of the config it belongs to (-e, one of {[e.id for e in cfg.experiments]})")
    exp = cfg.experiment(experiment_id) if experiment_id is not None else cfg.experiments[0]
    meta = load_checkpoint(checkpoint).meta
    cfg = cfg.model_copy(update={"experiments": (exp,)})
    run_dir = new_run_dir(out_root, cfg.name)
    write_resolved_config(cfg, run_dir / CONFIG_FILE)
    directory = experiment_dir(run_dir, exp)
    directory.mkdir()
    shutil.copy2(checkpoint, directory / "model.pt")
    training = TrainResult(directory / "model.pt", int(meta.get("epoch", 0)), [], [], meta.get("metric_name", "none"), None, 0.0, 0, 0)
    write_json(directory / TRAINING_FILE, {**dataclasses.asdict(training), "model_path": "model.pt"})
    evaluate_run(run_dir, prepared_root)
    return run_dir
