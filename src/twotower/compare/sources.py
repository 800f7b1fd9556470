"""What ``twotower compare`` accepts: run directories, config directories and MLflow runs (``mlflow:<id>``).

An MLflow run (a parent run logged by ``twotower.tracking.log_run``) is downloaded into a temporary
directory in the run-directory layout and compared like a directory; the temporary copy is removed
when the comparison is done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twotower.compare import Comparison, compare_runs
from twotower.compare.rundata import CompareError
from twotower.evaluate.bootstrap import DEFAULT_RESAMPLES
from twotower.tracking import download_run

MLFLOW_PREFIX = "mlflow:"


def compare_sources(
    sources: list[str],
    reference: str | None = None,
    *,
    mlflow_uri: str | None = None,
    seeds: int | None = None,
    per_run: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """``compare_runs`` over paths and ``mlflow:<run id>`` arguments (those need ``mlflow_uri``)."""
    with tempfile.TemporaryDirectory(prefix="twotower-compare-") as tmp:
        local: dict[str, Path] = {}
        for index, source in enumerate(dict.fromkeys([*sources, *([reference] if reference else [])])):
            if source.startswith(MLFLOW_PREFIX):
                if not mlflow_uri:
                    raise CompareError(f"{source}: an MLflow run needs the tracking URI: add --mlflow URI")
                local[source] = download_run(mlflow_uri, source.removeprefix(MLFLOW_PREFIX), Path(tmp) / str(index))
            else:
                local[source] = Path(source)
        names = {path: source for source, path in local.items() if source.startswith(MLFLOW_PREFIX)}
        return compare_runs(
            [local[s] for s in sources],
            local[reference] if reference else None,
            seeds=seeds,
            per_run=per_run,
            resamples=resamples,
            seed=seed,
            names=names,
        )
