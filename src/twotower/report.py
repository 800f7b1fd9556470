"""The run's report from its files: the sheet's two tables (Experiments, Results), the slices, notes,
``summary.json`` and the plots. Everything is read from the experiments' ``metrics.json``
(``outcome.read_outcome``), so the report of any run directory can be rebuilt."""

from __future__ import annotations

from pathlib import Path

from twotower.config import Config
from twotower.content.metadata import METADATA_NOTE
from twotower.evaluate.played import BASELINES
from twotower.evaluate.slices import slice_table
from twotower.evaluate.tables import experiment_rows, results_table
from twotower.io import write_json, write_text
from twotower.outcome import ExperimentOutcome
from twotower.plots import plot_metrics, plot_training
from twotower.retrieval.tables import retrieval_table, warm_cold_table


def train_days_label(outcome: ExperimentOutcome) -> str:
    """``2022-04-25 - 2022-05-01 (7 days)``; with fewer days of data than asked: ``(2 of 12 days with data)``."""
    e = outcome.experiment
    present = outcome.payload.get("funnel", {}).get("notes", {}).get("training days with data")
    days = f"{e.train_days} days" if present is None or len(present) == e.train_days else f"{len(present)} of {e.train_days} days with data"
    return f"{e.train_start} - {e.train_end} ({days})"


def experiments_table(outcomes: list[ExperimentOutcome]) -> str:
    """The sheet's Experiments table: Experiment No, event type, Train DATA, VAL DATA, Status."""
    lines = ["| Experiment No | event type | Train DATA | VAL DATA | Status |", "|---|---|---|---|---|"]
    for o in outcomes:
        e = o.experiment
        status = o.status.replace("|", "/")
        lines.append(f"| {e.id} | {e.event_type} | {train_days_label(o)} | {e.val_date} | {status} |")
    return "\n".join(lines) + "\n"


def results_rows(outcomes: list[ExperimentOutcome]) -> list:
    rows = []
    for o in outcomes:
        if o.completed and o.metrics:
            rows += experiment_rows(o.experiment.id, **o.metrics)
    return rows


def notes_lines(cfg: Config, outcomes: list[ExperimentOutcome]) -> list[str]:
    lines = []
    if cfg.content.encoder == "metadata":
        lines.append(f"Note: {METADATA_NOTE}.")
    for o in outcomes:
        if not (o.completed and o.metrics):
            continue
        funnel_notes = o.payload["funnel"]["notes"]
        unseen = funnel_notes.get("evaluation share of rows with items unseen in training")
        left_out = ", ".join(f"{n:,} {why}" for why, n in funnel_notes.get("evaluation users left out", {}).items())
        t = o.training
        model = o.metrics["model"]
        lines.append(
            f"Experiment {o.experiment.id}: evaluated {model['n_users']:,} users and {model['n_rows']:,} rows "
            f"(left out when the set was built: {left_out}); "
            f"{(unseen or 0):.1%} of rows have items unseen in training; "
            f"{t.get('objective', 'bce')} objective; {t['best_epoch']} epoch(s) chosen by held-out {t['holdout_metric_name']} "
            f"on {t['holdout_day']} ({t['n_train']:,} rows before it)"
            + (f", then refit on every training day ({t['n_refit']:,} rows)" if t.get("refit") else "")
            + f"; {t['examples_per_s']:,.0f} examples/s; {o.seconds:.0f} s."
        )
    return lines


def slices_section(outcomes: list[ExperimentOutcome]) -> list[str]:
    records = {o.experiment.id: o.payload["slices"] for o in outcomes if o.completed and o.payload.get("slices")}
    if not records:
        return []
    return [
        "## Slices (played re-ranking)",
        "",
        "Each cell: mean per-user auc over the users with both labels inside the slice (`users`), and in "
        "parentheses the global auc over all the slice's rows (`rows`); item and duration slices cut users' "
        "lists short, so read the global auc there.",
        "",
        slice_table(records, ("model", *BASELINES)),
    ]


def retrieval_section(outcomes: list[ExperimentOutcome]) -> list[str]:
    payloads = {o.experiment.id: o.retrieval for o in outcomes if o.completed and o.retrieval}
    if not payloads:
        return []
    counts = "; ".join(
        f"experiment {e}: {p['counts']['users evaluated']:,} users, {p['counts']['targets']:,} targets, "
        f"{p['counts']['catalog items']:,} catalog items ({p['counts']['targets removed as already seen']:,} "
        f"targets removed as seen, {p['counts']['targets outside the catalog (unreachable)']:,} unreachable)"
        for e, p in payloads.items()
    )
    return [
        "## Catalog retrieval (top 500 of the whole catalog, seen items excluded; docs/retrieval.md)",
        "",
        f"Users with a completed play on the validation day; {counts}.",
        "",
        retrieval_table(payloads),
        "Recall@100 on warm users (played before the day) and cold users (no earlier play):",
        "",
        warm_cold_table(payloads),
    ]


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
            *slices_section(outcomes),
            *retrieval_section(outcomes),
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
                "metrics": o.metrics,
                "retrieval": {s: parts["all"] for s, parts in o.retrieval["scorers"].items()} if o.retrieval else None,
            }
            for o in outcomes
        ],
    }
    write_json(run_dir / "summary.json", summary)
    completed = [o for o in outcomes if o.completed]
    plot_metrics(completed, run_dir / "metrics.png")
    plot_training(completed, run_dir / "training.png")
    return text
