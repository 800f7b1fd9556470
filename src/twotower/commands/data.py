"""Data commands: prepare, embed, metrics (score any model's predictions) and synth (a planted-signal log)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from twotower.commands.common import ConfigArg, DataOpt, ExperimentOpt, OutOpt, SetOpt, fail
from twotower.config import ConfigError, load_config
from twotower.config_files import is_uri


def prepare(
    config: ConfigArg,
    experiment: ExperimentOpt = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Where to write the results: a directory, or a URI (hdfs://, s3a://, file://).")
    ] = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an interrupted (incomplete) result in --out; a completed one is never replaced.")
    ] = False,
) -> None:
    """Prepare the data: clean, filter, label and sample the logs into training examples, history snapshots
    and the evaluation set (Parquet), and print the funnel of rows kept at each step.

    Writes prepared/<config name>/experiment_<id>/ (or --out/experiment_<id>/).
    """
    from twotower.data.prepare import prepare_experiment
    from twotower.data.validate import DataError

    try:
        cfg = load_config(config, data_path=data, overrides=set_ or ())
        experiments = cfg.selected(None if experiment is None else [experiment])
        root = out or str(Path("prepared") / cfg.name)
        for exp in experiments:
            name = f"experiment_{exp.id}"
            target = f"{root.rstrip('/')}/{name}" if is_uri(root) else Path(root) / name  # Path would fold s3a://
            result = prepare_experiment(cfg, exp, target, overwrite=overwrite)
            typer.echo(f"\nexperiment {exp.id}: funnel\n{result.funnel.table()}\nwrote {result.out_dir}")
    except (ConfigError, DataError) as exc:
        fail(str(exc))


def embed(
    config: ConfigArg,
    experiment: ExperimentOpt = None,
    out: OutOpt = None,
    prepared: Annotated[
        Path | None, typer.Option("--prepared", help="What `prepare --out` wrote (default: prepared/<config name>).")
    ] = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing item_embeddings.parquet.")] = False,
) -> None:
    """Encode item content and reduce it with PCA fitted on the training window's items.

    Reads each experiment's items.parquet from the prepared directory and writes item_embeddings.parquet
    and item_embeddings.json (the report) into --out (default: the prepared directory).
    """
    from twotower.content.item_table import embed_prepared

    try:
        cfg = load_config(config, overrides=set_ or ())
        experiments = cfg.selected(None if experiment is None else [experiment])
        for exp in experiments:
            source = (prepared or Path("prepared") / cfg.name) / f"experiment_{exp.id}"
            target = source
            if out is not None:
                target = out if len(experiments) == 1 else out / f"experiment_{exp.id}"
            if (target / "item_embeddings.parquet").exists() and not overwrite:
                raise ValueError(
                    f"{target / 'item_embeddings.parquet'} exists; pass --overwrite to replace it, or --out elsewhere"
                )
            report = embed_prepared(cfg, source, target, exp.id)
            typer.echo(
                f"experiment {exp.id}: {report['items']} items, {report['encoder']} ({report['input_dim']}-d) -> "
                f"PCA {report['pca_components']} (explained variance {report['explained_variance_ratio_total']:.3f}); "
                f"wrote {report['path']}"
            )
            if "note" in report:
                typer.echo(f"note: {report['note']}")
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


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
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if json_out is not None:
        try:
            write_json(json_out, model.as_dict())
        except OSError as exc:  # the message would name the temporary file: name --json instead
            fail(f"cannot write --json {json_out}: {exc.strerror or exc}; choose a writable path")
        typer.echo(f"wrote {json_out}")


def synth(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the planted log (must be empty or new).")],
    users: Annotated[int, typer.Option(help="Users.")] = 3000,
    items: Annotated[int, typer.Option(help="Items.")] = 2000,
    topics: Annotated[int, typer.Option(help="Topic clusters of the content vectors.")] = 20,
    days: Annotated[int, typer.Option(help="Days of plays (the last is the validation day).")] = 14,
    seed: Annotated[int, typer.Option(help="Random seed (data and the config's seed).")] = 0,
) -> None:
    """Write a planted-signal log (known topic preferences), its truth and a ready config (planted.toml)."""
    from twotower.synth import SynthSpec, write_synth_command

    try:
        spec = SynthSpec(users=users, items=items, topics=topics, days=days, seed=seed)
        paths = write_synth_command(spec, out_dir)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"wrote {len(paths)} files to {out_dir}; run it with: twotower run {paths['config']}")
