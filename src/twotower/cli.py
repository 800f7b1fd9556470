"""twotower: train and evaluate two-tower retrieval models for short-video recommendation.

One config file (TOML) describes an experiment sheet: data, filters, label, features, model and the
sliding train/validation windows. `twotower run CONFIG` does everything; the other commands run one stage.
Errors print one line starting with "error:" and exit with status 2.
"""

# Each command is a thin wrapper: it parses arguments, calls library functions (which return values and
# raise on bad input), prints for people and turns the library's errors into a one-line message.

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from twotower.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigArg = Annotated[Path, typer.Argument(help="The experiment config file (TOML), e.g. configs/kuairand_blip_history.toml.")]
ExperimentOpt = Annotated[
    int | None, typer.Option("--experiment", "-e", help="Only this experiment id of the config (default: every one).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Where to write the results (a directory).")]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Your copy of the data (a directory or an events file); replaces data.path of the config."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override one config key (a TOML value); repeatable."),
]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def prepare(
    config: ConfigArg, experiment: ExperimentOpt = None, out: OutOpt = None, data: DataOpt = None, set_: SetOpt = None
) -> None:
    """Prepare the data: clean, filter, label and sample the logs into training examples, history snapshots
    and the evaluation set (Parquet), and print the funnel of rows kept at each step.

    Writes prepared/<config name>/experiment_<id>/ (or --out/experiment_<id>/).
    """
    from twotower.data.prepare import prepare_experiment
    from twotower.data.validate import DataError

    try:
        cfg = load_config(config, data_path=data, overrides=set_ or ())
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
    set_: SetOpt = None,
) -> None:
    """Encode item content and reduce it with PCA fitted on the training window's items.

    Reads each experiment's items.parquet from the prepared directory and writes item_embeddings.parquet
    and item_embeddings.json (the report) into --out (default: the prepared directory).
    """
    from twotower.content.item_table import embed_prepared

    try:
        cfg = load_config(config, overrides=set_ or ())
        experiments = [cfg.experiment(experiment)] if experiment is not None else list(cfg.experiments)
        for exp in experiments:
            source = (prepared or Path("prepared") / cfg.name) / f"experiment_{exp.id}"
            target = source
            if out is not None:
                target = out if len(experiments) == 1 else out / f"experiment_{exp.id}"
            report = embed_prepared(cfg, source, target, exp.id)
            typer.echo(
                f"experiment {exp.id}: {report['items']} items, {report['encoder']} ({report['input_dim']}-d) -> "
                f"PCA {report['pca_components']} (explained variance {report['explained_variance_ratio_total']:.3f}); "
                f"wrote {report['path']}"
            )
            if "note" in report:
                typer.echo(f"note: {report['note']}")
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def metrics(
    scores: Annotated[Path, typer.Argument(help="Parquet or CSV file with columns user_id, item_id, label (0/1), score.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON to this file.")] = None,
) -> None:
    """Score any model's predictions with the sheet's ranking metrics (played re-ranking, docs/metrics.md).

    Prints the results table for your scores and for seeded random scores, with the user and row counts.
    """
    from twotower.evaluate.baselines import random_scores
    from twotower.evaluate.scores_file import read_scores, scores_metrics
    from twotower.evaluate.tables import experiment_rows, left_out_line, results_table
    from twotower.io import write_json

    try:
        frame = read_scores(scores)
        model = scores_metrics(frame)
        random = scores_metrics(frame.assign(score=random_scores(len(frame), seed=0)))
        typer.echo(results_table(experiment_rows(scores.stem, model=model, random=random), extra=True), nl=False)
        typer.echo(left_out_line(model))
        if json_out is not None:
            write_json(json_out, model.as_dict())
            typer.echo(f"wrote {json_out}")
    except (ValueError, OSError) as exc:
        _fail(str(exc))


@app.command()
def run(config: ConfigArg, out: OutOpt = None, data: DataOpt = None, set_: SetOpt = None) -> None:
    """Run the whole experiment: prepare, embed, train and evaluate every experiment of the config.

    Prints and saves the sheet's tables (model beside its baselines) in a new directory
    runs/<config name>/<timestamp>/ (or under --out); an earlier run is never overwritten.
    """
    from twotower.data.validate import DataError
    from twotower.pipeline import run as run_pipeline

    try:
        run_pipeline(load_config(config, data_path=data, overrides=set_ or ()), out_root=out or Path("runs"))
    except (ConfigError, DataError) as exc:
        _fail(str(exc))


if __name__ == "__main__":
    app()
