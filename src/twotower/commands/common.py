"""What every command shares: the option types, the one-line error and the exit status of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ConfigArg = Annotated[Path, typer.Argument(help="The experiment config file (TOML), e.g. configs/kuairand_blip_history.toml.")]
ExperimentOpt = Annotated[
    int | None, typer.Option("--experiment", "-e", help="Only this experiment id of the config (default: every one).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Where to write the results (a directory).")]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Your copy of the data (a directory or an events file, or a URI: hdfs://, s3a://, file://); "
        "replaces data.path of the config.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override one config key (a TOML value); repeatable."),
]

NoReuseOpt = Annotated[
    bool, typer.Option("--no-reuse", help="Prepare and embed anew even when an earlier run had the same inputs.")
]

MlflowOpt = Annotated[
    str | None,
    typer.Option("--mlflow", metavar="URI", help="Log the run to MLflow at this tracking URI, e.g. file:./mlruns (replaces tracking.mlflow_uri)."),
]


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 2 (bad input)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def exit_for(run_dir: Path) -> None:
    """Exit 1 when some experiment failed (the tables are written all the same), so schedulers notice."""
    from twotower.runs import COMPLETED, read_status

    status = read_status(run_dir)
    if status.get("state") != COMPLETED:
        failed = status.get("failed_experiments") or []
        typer.secho(f"failed: experiment(s) {', '.join(map(str, failed))} (see their error.txt)", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


def with_mlflow(set_: list[str] | None, mlflow: str | None) -> list[str]:
    """``--set`` overrides plus ``--mlflow URI`` as ``tracking.mlflow_uri`` (quoted: any text is one string)."""
    return [*(set_ or ()), *([f"tracking.mlflow_uri={json.dumps(mlflow)}"] if mlflow else [])]
