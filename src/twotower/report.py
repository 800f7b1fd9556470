"""The sheet's two tables (Experiments, Results) in Markdown, a JSON summary and plots of a run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from twotower.config import Config  # noqa: E402
from twotower.content.metadata import METADATA_NOTE  # noqa: E402
from twotower.evaluate.metrics import SHEET_METRICS, RankingMetrics  # noqa: E402
from twotower.evaluate.tables import experiment_rows, results_table  # noqa: E402
from twotower.io import write_json, write_text  # noqa: E402
from twotower.outcome import ExperimentOutcome  # noqa: E402


def metrics_json(metrics: RankingMetrics) -> dict:
    """A scorer's metrics and counts for JSON, without the metric-level left-out counts: the evaluation
    set already holds only users with both labels; who was left out, and why, is in ``evaluation_set``."""
    return {k: v for k, v in metrics.as_dict().items() if not k.startswith("n_users_left_out")}


def write_experiment_json(outcome: ExperimentOutcome) -> None:
    """``metrics.json`` of one experiment: metrics per scorer, the evaluation set, training and the notes."""
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
    write_json(outcome.directory / "metrics.json", payload)


def experiments_table(outcomes: list[ExperimentOutcome]) -> str:
    """The sheet's Experiments table: Experiment No, event type, Train DATA, VAL DATA, Status."""
    lines = ["| Experiment No | event type | Train DATA | VAL DATA | Status |", "|---|---|---|---|---|"]
    for o in outcomes:
        e = o.experiment
        train = f"{e.train_start} - {e.train_end} ({e.train_days} days)"
        status = o.status.replace("|", "/")
        lines.append(f"| {e.id} | {e.event_type} | {train} | {e.val_date} | {status} |")
    return "\n".join(lines) + "\n"


def results_rows(outcomes: list[ExperimentOutcome]) -> list:
    rows = []
    for o in outcomes:
        if o.metrics:
            rows += experiment_rows(o.experiment.id, **o.metrics)
    return rows


def notes_lines(cfg: Config, outcomes: list[ExperimentOutcome]) -> list[str]:
    lines = []
    if cfg.content.encoder == "metadata":
        lines.append(f"Note: {METADATA_NOTE}.")
    for o in outcomes:
        if not o.metrics:
            continue
        funnel_notes = o.notes["funnel"]["notes"]
        unseen = funnel_notes.get("evaluation share of rows with items unseen in training")
        left_out = ", ".join(f"{n:,} {why}" for why, n in funnel_notes.get("evaluation users left out", {}).items())
        t = o.training
        model = o.metrics["model"]
        lines.append(
            f"Experiment {o.experiment.id}: evaluated {model.n_users:,} users and {model.n_rows:,} rows "
            f"(left out when the set was built: {left_out}); "
            f"{(unseen or 0):.1%} of rows have items unseen in training; "
            f"trained on {t.n_train:,} examples ({t.examples_per_s:,.0f} examples/s), best epoch {t.best_epoch} "
            f"by held-out {t.holdout_metric_name} on {t.holdout_day}; {o.seconds:.0f} s."
        )
    return lines


def plot_metrics(outcomes: list[ExperimentOutcome], path: Path) -> None:
    """Grouped bars: each metric for the model and the baselines, one panel per experiment."""
    done = [o for o in outcomes if o.metrics]
    if not done:
        return
    fig, axes = plt.subplots(len(done), 1, figsize=(13, 3.6 * len(done)), squeeze=False)
    for ax, o in zip(axes[:, 0], done, strict=True):
        names = list(o.metrics)
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [o.metrics[name].values.get(m) for m in SHEET_METRICS]
            xs = [x + i * width for x in range(len(SHEET_METRICS))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name)
            for x, v in zip(xs, values, strict=True):
                if v is None:  # no user qualified: say so rather than draw a zero
                    ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(SHEET_METRICS))], SHEET_METRICS, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"experiment {o.experiment.id}: model vs baselines (played re-ranking)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(outcomes: list[ExperimentOutcome], path: Path) -> None:
    """Training loss and held-out metric per epoch for every experiment."""
    done = [o for o in outcomes if o.training is not None]
    if not done:
        return
    fig, (loss_ax, hold_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for o in done:
        t = o.training
        epochs = range(1, len(t.train_loss) + 1)
        loss_ax.plot(epochs, t.train_loss, marker="o", label=f"experiment {o.experiment.id}")
        hold_ax.plot(range(1, len(t.holdout_metric) + 1), t.holdout_metric, marker="o", label=f"experiment {o.experiment.id}")
    loss_ax.set(title="training loss (weighted BCE)", xlabel="epoch")
    hold_ax.set(title=f"held-out last training day: {done[0].training.holdout_metric_name}", xlabel="epoch")
    loss_ax.legend()
    hold_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(cfg: Config, outcomes: list[ExperimentOutcome], run_dir: Path) -> str:
    """Write tables.md, summary.json and the plots into ``run_dir``; return the Markdown."""
    rows = results_rows(outcomes)
    text = "\n".join(
        [
            f"# {cfg.name}",
            "",
            "## Experiments",
            "",
            experiments_table(outcomes),
            "## Results (played re-ranking on the validation day; docs/metrics.md)",
            "",
            results_table(rows, extra=True) if rows else "No experiment completed.\n",
            *[f"- {line}" for line in notes_lines(cfg, outcomes)],
            "",
        ]
    )
    write_text(run_dir / "tables.md", text)
    summary = {
        "config": cfg.name,
        "experiments": [
            {
                "id": o.experiment.id,
                "status": o.status,
                "seconds": round(o.seconds, 2),
                "metrics": {name: metrics_json(m) for name, m in o.metrics.items()},
            }
            for o in outcomes
        ],
    }
    write_json(run_dir / "summary.json", summary)
    plot_metrics(outcomes, run_dir / "metrics.png")
    plot_training(outcomes, run_dir / "training.png")
    return text
