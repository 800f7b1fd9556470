"""What one experiment produced: ``metrics.json`` and ``status.json`` in its directory, written by the
pipeline and read back (by the report, ``--resume`` and ``compare``) as an ``ExperimentOutcome``.

Everything the run's tables show is in these files, so a report can be rebuilt from a run directory alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from twotower.config import ExperimentConfig
from twotower.evaluate.metrics import RankingMetrics
from twotower.evaluate.played import PlayedEvaluation
from twotower.io import write_json
from twotower.runs import COMPLETED, read_status
from twotower.train import TrainResult

METRICS_FILE = "metrics.json"
RETRIEVAL_FILE = "retrieval.json"  # written by twotower.retrieval.evaluate


@dataclass
class ExperimentOutcome:
    """One experiment's result as written to its directory; ``status`` is "Completed" or "Failed: <reason>".

    ``payload`` is ``metrics.json`` (empty when the experiment failed before writing it).
    """

    experiment: ExperimentConfig
    status: str
    directory: Path
    payload: dict = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "Completed"

    @property
    def metrics(self) -> dict[str, dict]:
        """Scorer name -> the sheet's metrics and counts (``RankingMetrics.as_dict`` without left-out counts)."""
        return self.payload.get("metrics", {})

    @property
    def retrieval(self) -> dict | None:
        """retrieval.json: catalog retrieval per scorer (None when not evaluated)."""
        return self.payload.get("retrieval")

    @property
    def training(self) -> dict | None:
        return self.payload.get("training")

    @property
    def seconds(self) -> float:
        return float(self.payload.get("seconds", 0.0))


def metrics_json(metrics: RankingMetrics) -> dict:
    """A scorer's metrics and counts for JSON, without the metric-level left-out counts: the evaluation
    set already holds only users with both labels; who was left out, and why, is in ``evaluation_set``."""
    return {k: v for k, v in metrics.as_dict().items() if not k.startswith("n_users_left_out")}


def training_json(training: TrainResult) -> dict:
    return {
        "best_epoch": training.best_epoch,
        "train_loss": training.train_loss,
        f"holdout_{training.holdout_metric_name}": training.holdout_metric,
        "holdout_metric_name": training.holdout_metric_name,
        "holdout_day": training.holdout_day,
        "examples_per_s": round(training.examples_per_s, 1),
        "n_train": training.n_train,
        "n_holdout": training.n_holdout,
        "objective": training.objective,
        "selection_rule": training.selection_rule,
        "refit": training.refit,
        "refit_loss": training.refit_loss,
        "n_refit": training.n_refit,
    }


def write_metrics_json(
    directory: Path,
    experiment: ExperimentConfig,
    seconds: float,
    played: PlayedEvaluation,
    training: TrainResult,
    notes: dict,
) -> dict:
    """``metrics.json`` of one completed experiment: metrics per scorer, slices, the evaluation set,
    training, and the notes ("funnel": funnel.json, "content": the content report); returns the payload."""
    funnel_notes = notes.get("funnel", {}).get("notes", {})
    payload = {
        "experiment": experiment.id,
        "status": "Completed",
        "seconds": round(seconds, 2),
        "metrics": {name: metrics_json(m) for name, m in played.metrics.items()},
        "slices": played.slices,
        "evaluation_set": {
            "users_left_out": funnel_notes.get("evaluation users left out"),
            "share_of_rows_with_items_unseen_in_training": funnel_notes.get(
                "evaluation share of rows with items unseen in training"
            ),
        },
        "training": training_json(training),
        **notes,
    }
    write_json(directory / METRICS_FILE, payload)
    return payload


def read_outcome(experiment: ExperimentConfig, directory: Path) -> ExperimentOutcome:
    """The outcome of ``experiment`` from its directory (status.json, metrics.json)."""
    status = read_status(directory)
    path = directory / METRICS_FILE
    payload = json.loads(path.read_text()) if path.exists() else {}
    if (directory / RETRIEVAL_FILE).exists():
        payload["retrieval"] = json.loads((directory / RETRIEVAL_FILE).read_text())
    if status.get("state") == COMPLETED:
        return ExperimentOutcome(experiment, "Completed", directory, payload)
    reason = status.get("reason") or f"not completed (state: {status.get('state')})"
    return ExperimentOutcome(experiment, f"Failed: {reason}", directory, payload)
