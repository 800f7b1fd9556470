"""Experiment commands: run (everything), the stages train and evaluate, and the series: compare, series, track."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from twotower.commands.common import (
    ConfigArg,
    DataOpt,
    ExperimentOpt,
    MlflowOpt,
    NoReuseOpt,
    OutOpt,
    SetOpt,
    exit_for,
    fail,
    with_mlflow,
)
from twotower.config import ConfigError, load_config


def run(
    config: Annotated[
        Path | None, typer.Argument(help="The experiment config file (TOML), e.g. configs/kuairand_blip_history.toml.")
    ] = None,
    out: OutOpt = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Finish this interrupted run directory instead of starting a new one.")
    ] = None,
    no_reuse: NoReuseOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Run the whole experiment: prepare, embed, train and evaluate every experiment of the config.

    Prints and saves the sheet's tables (model beside its baselines) in a new directory
    runs/<config name>/<timestamp>/ (or under --out); an earlier run is never overwritten. Prepared data and
    content tables of an earlier run with the same inputs are reused (--no-reuse to redo them). Exit status:
    0 when every experiment completed, 1 when some failed, 2 on bad input.
    """
    from twotower import pipeline
    from twotower.data.validate import DataError
    from twotower.distributed import world_size
    from twotower.runs import RunError
    from twotower.tracking import TrackingError

    try:
        if world_size() > 1:
            raise ConfigError("`run` is one process; under torchrun use `twotower train` (prepare and evaluate in one process)")
        if resume is not None:
            if config is not None:
                raise ConfigError("--resume takes its config from the run directory; give no CONFIG")
            run_dir = pipeline.resume(resume, reuse=not no_reuse)
        elif config is None:
            raise ConfigError("give a CONFIG file (or --resume RUN_DIR)")
        else:
            cfg = load_config(config, data_path=data, overrides=with_mlflow(set_, mlflow))
            run_dir = pipeline.run(cfg, out_root=out or Path("runs"), reuse=not no_reuse)
    except (ConfigError, DataError, RunError, TrackingError) as exc:
        fail(str(exc))
    exit_for(run_dir)


def train(
    config: ConfigArg,
    prepared: Annotated[Path, typer.Option("--prepared", help="What `prepare --out` wrote (holds experiment_<id>/).")],
    items: Annotated[
        Path | None, typer.Option("--items", help="A content table (item_embeddings.parquet) to use instead of embedding.")
    ] = None,
    experiment: Annotated[list[int] | None, typer.Option("--experiment", "-e", help="Only these experiment ids.")] = None,
    out: OutOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train on prepared data, without preparing again: iterate on the model quickly.

    Writes a new run directory (the same files `run` writes up to the model); finish it with
    `twotower evaluate RUN_DIR`. Under `torchrun --nproc-per-node N` the N processes train one model
    together (data parallel; rank 0 writes the files); see docs/scaling.md.
    """
    from twotower import distributed
    from twotower.data.validate import DataError
    from twotower.pipeline import train_run
    from twotower.runs import RunError

    try:
        cfg = load_config(config, overrides=set_ or ())
        dist = distributed.from_env(cfg.train.device)
        try:
            run_dir = train_run(cfg, prepared, out or Path("runs"), items, experiment, dist=dist)
        except BaseException:
            distributed.close(dist, finished=False)
            raise
        distributed.close(dist)
    except (ConfigError, DataError, RunError, ValueError) as exc:
        fail(str(exc))
    if dist is None or dist.is_main:
        typer.echo(f"run directory: {run_dir}")


def evaluate(
    target: Annotated[Path, typer.Argument(help="A run directory (from `train` or `run`), or a checkpoint (model.pt).")],
    prepared: Annotated[
        Path | None, typer.Option("--prepared", help="Prepared data to evaluate on (default: the run's own).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="With a checkpoint: its experiment config.")] = None,
    experiment: ExperimentOpt = None,
    out: OutOpt = None,
) -> None:
    """Evaluate a trained model: the sheet's tables and every evaluation file `run` writes.

    With a run directory, every trained experiment is evaluated in place. With a checkpoint, --config and
    --prepared are needed, and a new run directory is written.
    """
    from twotower.pipeline import evaluate_checkpoint, evaluate_run
    from twotower.runs import RunError

    try:
        if target.is_dir():
            evaluate_run(target, prepared)
            run_dir = target
        else:
            if config is None or prepared is None:
                raise ConfigError(f"{target} is a checkpoint: give --config CONFIG and --prepared DIR")
            run_dir = evaluate_checkpoint(target, load_config(config), experiment, prepared, out or Path("runs"))
    except (ConfigError, RunError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    exit_for(run_dir)


def _seed_list(seeds: str | None, configs: list[str]) -> tuple[list[int] | None, list[str]]:
    """``--seeds 0,1,2``, or ``--seeds 0 1 2`` (the shell splits it: the whole numbers that are not files among
    the CONFIG arguments continue the list)."""
    if seeds is None:
        return None, configs
    extra = [c for c in configs if c.isdigit() and not Path(c).exists()]
    try:
        values = [int(s) for s in seeds.replace(",", " ").split()] + [int(c) for c in extra]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected whole numbers, e.g. --seeds 0 1 2") from None
    return values, [c for c in configs if c not in extra]


def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run directories (runs/<name>/<timestamp>), config directories (runs/<name>: its newest runs) or "
            "mlflow:<run id> (with --mlflow URI)."
        ),
    ],
    reference: Annotated[str | None, typer.Option("--reference", help="The run the others are compared with (default: the first).")] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="For a config directory: its newest completed runs of this many distinct seeds.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write compare.md, compare.json and compare.png here.")] = None,
    mlflow: MlflowOpt = None,
    per_run: Annotated[bool, typer.Option("--per-run", help="One row per run, even for seeds of one config.")] = False,
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples.")] = 2000,
) -> None:
    """Compare finished runs, with paired-bootstrap intervals over users.

    One row per config: the model's metrics averaged over experiments (mean ± sd over its seeds) and the
    difference to the reference in auc, ndcg@10, map and catalog recall@100 with a 95% paired-bootstrap
    interval over the users both runs evaluated (`*`: the interval excludes zero).
    """
    from twotower.compare.rundata import CompareError
    from twotower.compare.sources import compare_sources
    from twotower.compare.table import markdown, write_comparison
    from twotower.tracking import TrackingError

    try:
        result = compare_sources(
            runs, reference, mlflow_uri=mlflow, seeds=seeds, per_run=per_run, resamples=resamples
        )
        typer.echo(markdown(result), nl=False)
        for path in write_comparison(result, out) if out is not None else []:
            typer.echo(f"wrote {path}")
    except (CompareError, TrackingError, OSError) as exc:
        fail(str(exc))


def series(
    configs: Annotated[list[str], typer.Argument(help="Config files (TOML); the first is the reference.")],
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Run each config for these seeds: --seeds 0 1 2 (or 0,1,2).")
    ] = None,
    out: OutOpt = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    mlflow: MlflowOpt = None,
) -> None:
    """Run several configs (each for several seeds with --seeds) and end with the compare table.

    Runs go to runs/<config name>/<timestamp>/ (or under --out); the comparison to <out>/_series/<timestamp>/.
    """
    from twotower.compare.rundata import CompareError
    from twotower.compare.table import markdown
    from twotower.data.validate import DataError
    from twotower.runs import RunError
    from twotower.series import run_series
    from twotower.tracking import TrackingError

    try:
        seed_list, paths = _seed_list(seeds, configs)
        result = run_series(
            [Path(p) for p in paths], seed_list, out or Path("runs"), with_mlflow(set_, mlflow), data_path=data
        )
        typer.echo("\n" + markdown(result.comparison), nl=False)
        typer.echo(f"comparison: {result.directory}")
    except (ConfigError, DataError, RunError, CompareError, TrackingError) as exc:
        fail(str(exc))


def track(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (runs/<name>/<timestamp>).")],
    mlflow: Annotated[str, typer.Option("--mlflow", metavar="URI", help="MLflow tracking URI, e.g. file:./mlruns.")],
    experiment: Annotated[str, typer.Option("--experiment", help="The MLflow experiment.")] = "twotower",
) -> None:
    """Log a finished run directory to MLflow (what `run --mlflow` does at the end of a run)."""
    from twotower.tracking import TrackingError, log_run

    try:
        typer.echo(f"mlflow run {log_run(run_dir, mlflow, experiment)} at {mlflow}")
    except (TrackingError, OSError) as exc:
        fail(str(exc))
