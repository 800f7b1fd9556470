"""``twotower run``: the whole experiment flow as a short sequence of plain function calls.

For every experiment of the config: prepare → embed → train → evaluate (model and baselines), each
experiment in ``runs/<config name>/<timestamp>/experiment_<id>/``; then the sheet's two tables and plots.
A failing experiment is reported as ``Failed: <reason>`` and the others still run.
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from pathlib import Path

from twotower.checkpoint import load_checkpoint
from twotower.config import Config, ExperimentConfig, write_resolved_config
from twotower.content.item_table import build_item_table, write_item_table
from twotower.data.ingest import check_data_path
from twotower.data.prepare import prepare_experiment
from twotower.data.prepared import PreparedTables
from twotower.evaluate.played import evaluate_played
from twotower.inference import score
from twotower.outcome import ExperimentOutcome
from twotower.progress import say
from twotower.report import write_experiment_json, write_report
from twotower.train import train_model


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


def run_experiment(cfg: Config, exp: ExperimentConfig, directory: Path, progress: bool = True) -> ExperimentOutcome:
    """Prepare, embed, train and evaluate one experiment into ``directory``."""
    started = time.perf_counter()
    prepared = prepare_experiment(cfg, exp, directory / "prepared", progress=progress)
    say(f"\nexperiment {exp.id}: funnel\n{prepared.funnel.table()}\n", enabled=progress)
    data = PreparedTables.read(prepared.out_dir)
    train_items = data.items.loc[data.items["in_train"], "item_id"].to_numpy()
    item_table, content_report = build_item_table(cfg, data.items, train_items, progress=progress)
    write_item_table(item_table, directory / "item_embeddings.parquet")
    training = train_model(
        cfg.model, cfg.train, data.train, data.history, data.users, item_table, directory, seed=cfg.seed, progress=progress
    )
    bundle = load_checkpoint(training.model_path)
    scores = score(bundle, data.eval, data.history, data.users)
    data.eval.assign(score=scores)[["user_id", "item_id", "label", "score"]].to_parquet(directory / "scores.parquet")
    metrics = evaluate_played(data.eval, scores, data.popularity, cfg.seed)
    notes = {"funnel": prepared.funnel.as_dict(), "content": content_report}
    outcome = ExperimentOutcome(exp, "Completed", directory, metrics, training, notes, time.perf_counter() - started)
    write_experiment_json(outcome)
    return outcome


def run(cfg: Config, out_root: Path = Path("runs"), progress: bool = True) -> Path:
    """Run every experiment of ``cfg``; write and print the sheet's tables. Returns the run directory."""
    check_data_path(cfg.data)
    run_dir = new_run_dir(out_root, cfg.name)
    write_resolved_config(cfg, run_dir / "config.toml")
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
