"""One experiment of a completed run, opened for retrieval: its config, model, checkpoint hash and files.

The index, ``recommend`` and ``serve`` read runs only through ``open_experiment``, which refuses a run that
is not completed (``runs.require_run``) and an experiment that did not complete.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from twotower.checkpoint import ModelBundle, load_checkpoint
from twotower.config import Config, ConfigError, ExperimentConfig, load_config
from twotower.retrieval.index import file_sha256
from twotower.runs import COMPLETED, RunError, read_status, require_run

CONFIG_FILE = "config.toml"  # as pipeline.CONFIG_FILE (the pipeline imports retrieval, not the reverse)
INDEX_DIR = "index"


@dataclass
class RunExperiment:
    """A completed experiment: ``directory`` = RUN_DIR/experiment_<id>, its model and prepared files."""

    run_dir: Path
    cfg: Config
    exp: ExperimentConfig
    directory: Path
    bundle: ModelBundle
    checkpoint_sha256: str

    @property
    def val_day(self) -> dt.date:
        return self.exp.val_date

    @property
    def index_dir(self) -> Path:
        """Where ``twotower index`` writes the experiment's index by default."""
        return self.directory / INDEX_DIR

    def prepared(self, name: str, day: dt.date | None = None) -> pd.DataFrame | None:
        """A prepared table (``catalog``, ``items``, ``users``, ``history``, ...; with ``day`` only that day's
        rows), or None when the prepared directory has no such file."""
        path = self.directory / "prepared" / f"{name}.parquet"
        if not path.exists():
            return None
        at = dt.datetime.combine(day, dt.time()) if day is not None else None  # prepare writes timestamps
        frame = pd.read_parquet(path, filters=[("day", "=", at)] if at is not None else None)
        return frame.reset_index(drop=True)


def experiment_ids(run_dir: Path) -> list[int]:
    """The ids of the run's completed experiments (``RunError`` when the run may not be read)."""
    run_dir = Path(run_dir)
    require_run(run_dir, allow_failed=True)
    cfg = load_config(run_dir / CONFIG_FILE)
    return [e.id for e in cfg.experiments if read_status(run_dir / f"experiment_{e.id}").get("state") == COMPLETED]


def open_experiment(run_dir: Path, experiment_id: int | None = None, device: str = "cpu") -> RunExperiment:
    """Open experiment ``experiment_id`` of a completed run (of its only experiment when None).

    A failed run is accepted when this experiment completed; ``RunError`` otherwise, and when the run has
    several experiments and none is named."""
    run_dir = Path(run_dir)
    require_run(run_dir, allow_failed=True)
    cfg = load_config(run_dir / CONFIG_FILE)
    if experiment_id is None:
        if len(cfg.experiments) > 1:
            raise RunError(f"{run_dir} has experiments {[e.id for e in cfg.experiments]}: say which one with -e N")
        experiment_id = cfg.experiments[0].id
    try:
        exp = cfg.experiment(experiment_id)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    directory = run_dir / f"experiment_{exp.id}"
    state = read_status(directory).get("state")
    if state != COMPLETED:
        raise RunError(f"experiment {exp.id} of {run_dir} is not completed (state: {state}); see its error.txt")
    checkpoint = directory / "model.pt"
    return RunExperiment(run_dir, cfg, exp, directory, load_checkpoint(checkpoint, device), file_sha256(checkpoint))
