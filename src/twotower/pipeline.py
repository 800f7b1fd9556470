"""``twotower run``: the whole experiment flow as a short sequence of plain function calls.

For every experiment of the config: prepare → embed → train → evaluate (model and baselines), each
experiment in ``runs/<config name>/<timestamp>/experiment_<id>/``; then the seed's two tables and plots.
A failing experiment is reported as ``Failed: <reason>`` and the others still run.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.config import Config, ExperimentConfig, to_toml_dict
from twotower.content.pipeline import build_item_table, write_item_table
from twotower.data.ingest import check_data_path
from twotower.data.prepare import prepare_experiment
from twotower.evaluate.baselines import popularity_scores, random_scores
from twotower.evaluate.metrics import RankingMetrics, ranking_metrics
from twotower.report import json_ready, metrics_json, write_report
from twotower.train import TrainResult, load_checkpoint, score, train_model


@dataclass
class ExperimentOutcome:
    """What one experiment produced; ``status`` is "Completed" or "Failed: <reason>"."""

    experiment: ExperimentConfig
    status: str
    directory: Path
    metrics: dict[str, RankingMetrics] = field(default_factory=dict)
    training: TrainResult | None = None
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Prepared:
    """The Parquet files ``prepare`` wrote for one experiment, read into memory."""

    train: pd.DataFrame
    eval: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    popularity: pd.DataFrame

    @classmethod
    def read(cls, directory: Path) -> Prepared:
        users = directory / "users.parquet"
        return cls(
            *(pd.read_parquet(directory / f"{name}.parquet") for name in ("train", "eval", "history", "items")),
            pd.read_parquet(users) if users.exists() else None,
            pd.read_parquet(directory / "popularity.parquet"),
        )


def new_run_dir(root: Path, name: str) -> Path:
    """``root/name/<timestamp>``, created fresh: a run never writes into an earlier run's directory."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = root / name / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {root / name}")


def evaluate(cfg: Config, data: Prepared, scores: np.ndarray) -> dict[str, RankingMetrics]:
    """The seed's metrics for the model and the two baselines on the played re-ranking set."""
    ev = data.eval
    scorers = {
        "model": scores,
        "random": random_scores(len(ev), seed=cfg.seed),
        "popularity": popularity_scores(ev["item_id"], data.popularity),
    }
    return {name: ranking_metrics(ev["user_id"], ev["item_id"], ev["label"], s) for name, s in scorers.items()}


def run_experiment(cfg: Config, exp: ExperimentConfig, directory: Path, progress: bool = True) -> ExperimentOutcome:
    """Prepare, embed, train and evaluate one experiment into ``directory``."""
    started = time.perf_counter()
    prepared = prepare_experiment(cfg, exp, directory / "prepared", progress=progress)
    if progress:
        print(f"\nexperiment {exp.id}: funnel\n{prepared.funnel.table()}\n", flush=True)
    data = Prepared.read(prepared.out_dir)
    train_items = data.items.loc[data.items["in_train"], "item_id"].to_numpy()
    item_table, content_report = build_item_table(cfg, data.items, train_items, progress=progress)
    write_item_table(item_table, directory / "item_embeddings.parquet")
    training = train_model(
        cfg.model, cfg.train, data.train, data.history, data.items, data.users, item_table, directory, seed=cfg.seed, progress=progress
    )
    bundle = load_checkpoint(training.model_path)
    scores = score(bundle, data.eval, data.history, data.users, data.items)
    data.eval.assign(score=scores)[["user_id", "item_id", "label", "score"]].to_parquet(directory / "scores.parquet")
    metrics = evaluate(cfg, data, scores)
    notes = {"funnel": prepared.funnel.as_dict(), "content": content_report}
    outcome = ExperimentOutcome(exp, "Completed", directory, metrics, training, notes, time.perf_counter() - started)
    _write_experiment_json(outcome)
    return outcome


def _write_experiment_json(outcome: ExperimentOutcome) -> None:
    training = outcome.training
    funnel_notes = outcome.notes.get("funnel", {}).get("notes", {})
    payload = {
        "experiment": outcome.experiment.id,
        "status": outcome.status,
        "seconds": round(outcome.seconds, 2),
        "metrics": {name: metrics_json(m) for name, m in outcome.metrics.items()},
        "evaluation_set": {
            "users_left_out": funnel_notes.get("evaluation users left out"),
            "share_of_rows_with_items_unseen_in_training": funnel_notes.get(
                "evaluation share of rows with items unseen in training"
            ),
        },
        "training": None
        if training is None
        else {
            "best_epoch": training.best_epoch,
            "train_loss": training.train_loss,
            f"holdout_{training.holdout_metric_name}": training.holdout_metric,
            "holdout_day": training.holdout_day,
            "examples_per_s": round(training.examples_per_s, 1),
            "n_train": training.n_train,
            "n_holdout": training.n_holdout,
        },
        **outcome.notes,
    }
    text = json.dumps(json_ready(payload), indent=2, default=str, allow_nan=False)
    (outcome.directory / "metrics.json").write_text(text + "\n")


def run(cfg: Config, out_root: Path = Path("runs"), progress: bool = True) -> Path:
    """Run every experiment of ``cfg``; write and print the seed's tables. Returns the run directory."""
    check_data_path(cfg.data)
    run_dir = new_run_dir(out_root, cfg.name)
    (run_dir / "config.json").write_text(json.dumps(to_toml_dict(cfg), indent=2) + "\n")
    outcomes = []
    for exp in cfg.experiments:
        directory = run_dir / f"experiment_{exp.id}"
        started = time.perf_counter()
        try:
            outcome = run_experiment(cfg, exp, directory, progress=progress)
        except Exception as exc:  # one failing experiment must not stop the others; its reason is reported
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "error.txt").write_text(traceback.format_exc())
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            outcome = ExperimentOutcome(exp, f"Failed: {reason}", directory, seconds=time.perf_counter() - started)
        outcomes.append(outcome)
    print(write_report(cfg, outcomes, run_dir))
    print(f"\nrun directory: {run_dir}")
    return run_dir
