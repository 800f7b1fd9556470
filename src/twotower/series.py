"""``twotower series``: several configs (each for one or more seeds) run one after another, then compared.

Every (config, seed) is loaded first, so a bad file or key stops the series before anything runs. A seed
is set the way ``--set seed=N`` sets it. Each run is ``pipeline.run`` (its own ``runs/<name>/<timestamp>``
directory, tables, tracking when configured); the comparison (reference: the first config) is written to
``<out>/_series/<timestamp>/`` beside the runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twotower.compare import Comparison, compare_loaded
from twotower.compare.rundata import CompareError, load_run
from twotower.compare.table import write_comparison
from twotower.config import Config, load_config
from twotower.evaluate.bootstrap import DEFAULT_RESAMPLES
from twotower.pipeline import run

SERIES_DIR = "_series"


@dataclass
class SeriesResult:
    """The run directories (config order, then seed order), the comparison and where it was written."""

    run_dirs: list[Path]
    comparison: Comparison
    directory: Path
    files: list[Path] = field(default_factory=list)


def load_series(
    configs: Sequence[Path], seeds: Sequence[int] | None = None, overrides: Sequence[str] = (), data_path: Path | None = None
) -> list[Config]:
    """Every config for every seed (``seeds`` None: each config's own seed), validated before any run."""
    loaded = []
    for path in configs:
        for seed in seeds if seeds else [None]:
            extra = [f"seed={seed}"] if seed is not None else []
            loaded.append(load_config(path, data_path=data_path, overrides=[*overrides, *extra]))
    return loaded


def _fresh_dir(root: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise CompareError(f"could not create a fresh directory under {root}")


def run_series(
    configs: Sequence[Path],
    seeds: Sequence[int] | None = None,
    out_root: Path = Path("runs"),
    overrides: Sequence[str] = (),
    data_path: Path | None = None,
    progress: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
) -> SeriesResult:
    """Run every config for every seed, then compare them (reference: the first config).

    A run that did not complete is left out of the comparison with a note (its directory is still returned).
    """
    loaded = load_series(configs, seeds, overrides, data_path)
    run_dirs = [run(cfg, out_root, progress=progress) for cfg in loaded]
    runs, notes = [], []
    for directory in run_dirs:
        try:
            runs.append(load_run(directory))
        except CompareError as exc:
            notes.append(f"left out of the comparison: {exc}")
    if not runs:
        raise CompareError("no run of the series completed; see each run directory's error.txt")
    comparison = compare_loaded(runs, runs[0], resamples=resamples)
    comparison.notes = notes + comparison.notes
    directory = _fresh_dir(Path(out_root) / SERIES_DIR)
    return SeriesResult(run_dirs, comparison, directory, write_comparison(comparison, directory))
