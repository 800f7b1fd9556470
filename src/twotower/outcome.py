"""What one experiment of a run produced: the type the pipeline returns and the report reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from twotower.config import ExperimentConfig
from twotower.evaluate.metrics import RankingMetrics
from twotower.train import TrainResult


@dataclass
class ExperimentOutcome:
    """One experiment's result; ``status`` is "Completed" or "Failed: <reason>"."""

    experiment: ExperimentConfig
    status: str
    directory: Path
    metrics: dict[str, RankingMetrics] = field(default_factory=dict)  # scorer name -> played re-ranking
    training: TrainResult | None = None
    notes: dict = field(default_factory=dict)  # "funnel" (funnel.json), "content" (the content report)
    seconds: float = 0.0
