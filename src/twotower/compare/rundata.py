"""Reading what ``compare`` needs from a finished run directory (the layout of ``twotower run``).

Per run: ``config.toml`` (name, seed, experiment windows; read as plain TOML, so a run written by an
older version still reads), ``status.json`` (only a completed run is used; a run without one but with
``summary.json`` was written before runs carried a status and counts as completed, with a note).
Per completed experiment: ``metrics.json`` (the model's played metrics), ``per_user.parquet`` (the
model's per-user values; recomputed from ``scores.parquet`` with a note when a run predates the file)
and, when present, ``retrieval_per_user.parquet`` (the model's per-user catalog recall@100).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from twotower.evaluate.metrics import ranking_metrics
from twotower.evaluate.per_user import FILE as PER_USER_FILE
from twotower.evaluate.per_user import list_hashes
from twotower.runs import RunError, require_run

RETRIEVAL_PER_USER_FILE = "retrieval_per_user.parquet"
CATALOG_METRIC = "recall@100"


class CompareError(ValueError):
    """Runs that cannot be compared as asked; the message names the directory and what to do."""


@dataclass
class ExperimentData:
    """One completed experiment of a run: the model's metrics and per-user values.

    ``played``: one row per evaluated user: ``user_id``, ``list_hash`` and the per-user metric columns.
    ``catalog``: ``user_id``, ``recall@100`` (and ``n_targets`` when written), or None without the file.
    """

    id: int
    window: tuple[str, str, str]  # train_start, train_end, val_date
    metrics: dict[str, float | None]
    played: pd.DataFrame
    catalog: pd.DataFrame | None


@dataclass
class RunData:
    """A completed run: where it came from, its config and its completed experiments (by id)."""

    directory: Path
    source: str  # what was given on the command line: a path, or mlflow:<run id>
    name: str
    seed: int
    config: dict
    experiments: dict[int, ExperimentData]
    notes: list[str] = field(default_factory=list)
    legacy: bool = False  # no status.json: written before runs carried a status, taken as completed


def run_state(directory: Path) -> tuple[str, str | None]:
    """``(state, how)`` of a run directory: ``("completed", None)``, or ``("completed", "legacy")`` for a run
    without status.json but with summary.json (``runs.require_run``); ``CompareError`` for anything else."""
    try:
        status = require_run(directory)
    except RunError as exc:
        raise CompareError(f"{exc}; compare completed runs only") from None
    return status["state"], "legacy" if status.get("legacy") else None


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in ("status.json", "summary.json", "config.toml"))


def read_config(directory: Path) -> dict:
    """The run's resolved config as plain TOML (``config.json`` for runs written before ``config.toml``)."""
    if (directory / "config.toml").is_file():
        return tomllib.loads((directory / "config.toml").read_text(encoding="utf-8"))
    if (directory / "config.json").is_file():
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    raise CompareError(f"{directory} has no config.toml: is it a twotower run directory?")


def _played_per_user(directory: Path, notes: list[str]) -> pd.DataFrame:
    path = directory / PER_USER_FILE
    if path.is_file():
        frame = pd.read_parquet(path, filters=[("scorer", "==", "model")])
        frame = frame[frame["status"] == "evaluated"]
    elif (directory / "scores.parquet").is_file():
        rows = pd.read_parquet(directory / "scores.parquet")
        table = ranking_metrics(rows["user_id"], rows["item_id"], rows["label"], rows["score"], per_user=True).per_user
        frame = table[table["status"] == "evaluated"].merge(list_hashes(rows), on="user_id")
        notes.append(f"{directory.name}: no {PER_USER_FILE}; the model's per-user values recomputed from scores.parquet")
    else:
        raise CompareError(f"{directory} has neither {PER_USER_FILE} nor scores.parquet: rerun it to compare it")
    drop = [c for c in ("scorer", "status", "n", "n_pos") if c in frame.columns]
    return frame.drop(columns=drop).reset_index(drop=True)


def _catalog_per_user(directory: Path, notes: list[str]) -> pd.DataFrame | None:
    path = directory / RETRIEVAL_PER_USER_FILE
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    if "scorer" in frame.columns:
        frame = frame[frame["scorer"] == "model"]
    if CATALOG_METRIC not in frame.columns:
        notes.append(f"{directory.name}: {RETRIEVAL_PER_USER_FILE} has no {CATALOG_METRIC} column; catalog n/a")
        return None
    keep = ["user_id", CATALOG_METRIC] + (["n_targets"] if "n_targets" in frame.columns else [])
    frame = frame[keep].dropna(subset=[CATALOG_METRIC]).reset_index(drop=True)
    if frame.empty:  # catalog retrieval evaluated nobody (no user had an unseen target): n/a, not nan
        notes.append(f"{directory.name}: catalog retrieval evaluated no user; catalog n/a")
        return None
    return frame


def _experiment_completed(directory: Path, metrics: dict) -> bool:
    status_path = directory / "status.json"
    if status_path.is_file():
        try:
            return json.loads(status_path.read_text()).get("state") == "completed"
        except (OSError, ValueError):
            return False
    return str(metrics.get("status", "Completed")).startswith("Completed")


def load_run(directory: Path, source: str | None = None) -> RunData:
    """Read a completed run directory; ``CompareError`` when it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CompareError(f"{directory} is not a directory")
    _, how = run_state(directory)
    notes: list[str] = []
    config = read_config(directory)
    experiments = {}
    for exp in config.get("experiments", []):
        exp_dir = directory / f"experiment_{exp['id']}"
        metrics_path = exp_dir / "metrics.json"
        if not metrics_path.is_file():
            notes.append(f"{source or directory}: experiment {exp['id']} has no metrics.json; left out")
            continue
        payload = json.loads(metrics_path.read_text())
        if not _experiment_completed(exp_dir, payload):
            notes.append(f"{source or directory}: experiment {exp['id']} did not complete; left out")
            continue
        window = (str(exp["train_start"]), str(exp["train_end"]), str(exp["val_date"]))
        model = payload.get("metrics", {}).get("model", {})
        played = _played_per_user(exp_dir, notes)
        experiments[int(exp["id"])] = ExperimentData(int(exp["id"]), window, model, played, _catalog_per_user(exp_dir, notes))
    if not experiments:
        raise CompareError(f"{directory} has no completed experiment to compare")
    name = str(config.get("name", directory.parent.name))
    seed = int(config.get("seed", 0))
    return RunData(directory, source or str(directory), name, seed, config, experiments, notes, legacy=how == "legacy")


def expand_run_args(paths: list[Path], seeds: int | None = None) -> list[Path]:
    """Run directories for the command line's arguments, in order.

    A run directory is taken as is. A config's directory (``runs/<name>/``, whose children are runs)
    stands for its newest completed runs of ``seeds`` distinct seeds (default 1: the newest completed
    run); fewer than asked is a ``CompareError``.
    """
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if is_run_dir(path):
            out.append(path)
            continue
        children = sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), reverse=True) if path.is_dir() else []
        if not children:
            raise CompareError(f"{path} is neither a run directory nor a directory of runs (runs/<config name>/)")
        chosen: dict[int, Path] = {}
        for child in children:  # newest first: timestamps sort as text
            try:
                run_state(child)
            except CompareError:
                continue
            chosen.setdefault(int(read_config(child).get("seed", 0)), child)
            if len(chosen) == (seeds or 1):
                break
        if len(chosen) < (seeds or 1):
            raise CompareError(f"{path} has {len(chosen)} completed run(s) of distinct seeds; --seeds asks for {seeds}")
        out += [chosen[s] for s in sorted(chosen)]
    return out
