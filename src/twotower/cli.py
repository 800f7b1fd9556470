"""Command line: ``twotower prepare | embed | run | metrics``.

Each command is a thin wrapper: it parses arguments, calls one library function and turns the library's
errors into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from twotower.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (TOML).")]
ExperimentOpt = Annotated[int | None, typer.Option("--experiment", "-e", help="Experiment id (default: all).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Output directory.")]
DataOpt = Annotated[Path | None, typer.Option("--data", help="Data directory/file; replaces data.path.")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def prepare(config: ConfigArg, experiment: ExperimentOpt = None, out: OutOpt = None, data: DataOpt = None) -> None:
    """Ingest, clean, filter, label and write training examples, history snapshots and the evaluation set."""
    from twotower.data.prepare import prepare_experiment
    from twotower.data.validate import DataError

    try:
        cfg = load_config(config, data_path=data)
        experiments = [cfg.experiment(experiment)] if experiment is not None else list(cfg.experiments)
        root = out or Path("prepared") / cfg.name
        for exp in experiments:
            result = prepare_experiment(cfg, exp, root / f"experiment_{exp.id}")
            typer.echo(f"\nexperiment {exp.id}: funnel\n{result.funnel.table()}\nwrote {result.out_dir}")
    except (ConfigError, DataError) as exc:
        _fail(str(exc))


@app.command()
def embed(
    config: ConfigArg,
    experiment: ExperimentOpt = None,
    out: OutOpt = None,
    prepared: Annotated[
        Path | None, typer.Option("--prepared", help="What `prepare --out` wrote (default: prepared/<config name>).")
    ] = None,
) -> None:
    """Encode item content and reduce it with PCA fitted on the training window's items."""
    from twotower.content.pipeline import embed_command

    try:
        embed_command(load_config(config), experiment, out, prepared)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def metrics(
    scores: Annotated[Path, typer.Argument(help="Parquet or CSV with user_id, item_id, label, score.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON here.")] = None,
) -> None:
    """Compute the seed's ranking metrics for any model's scores (played re-ranking, metrics.md)."""
    from twotower.evaluate.scores_file import metrics_command

    try:
        metrics_command(scores, json_out)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def run(config: ConfigArg, out: OutOpt = None, data: DataOpt = None) -> None:
    """Prepare, embed, train and evaluate every experiment; print and save the seed's tables."""
    from twotower.data.validate import DataError
    from twotower.pipeline import run as run_pipeline

    try:
        run_pipeline(load_config(config, data_path=data), out_root=out or Path("runs"))
    except (ConfigError, DataError) as exc:
        _fail(str(exc))


if __name__ == "__main__":
    app()
