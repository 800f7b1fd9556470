"""``twotower compare``: finished runs side by side, each against a reference, with paired-bootstrap intervals.

``compare_runs(run_dirs)`` returns a ``Comparison``: one row per config (its seeds together; see
``pairing``), the model's metrics averaged over the run's experiments (mean ± sd across seeds), and
per row the difference to the reference row (default: the first) in ``DIFF_METRICS`` with a 95% paired
bootstrap interval over users (``evaluate.bootstrap``). ``compare.table`` renders it (Markdown, JSON,
plot). Runs are read from their directories (``rundata``); ``twotower.tracking`` downloads MLflow runs
into the same layout first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twotower.compare.pairing import (
    EVALUATION_KEYS,
    Difference,
    Group,
    difference,
    differing_keys,
    group_runs,
    seed_pairs,
    shared_experiments,
)
from twotower.compare.rundata import CATALOG_METRIC, CompareError, RunData, expand_run_args, load_run
from twotower.evaluate.bootstrap import DEFAULT_RESAMPLES
from twotower.evaluate.metrics import SHEET_METRICS

__all__ = ["CompareError", "Comparison", "Row", "compare_runs", "compare_loaded", "expand_run_args"]

#: the sheet's metrics shown per row (means over experiments), then catalog recall@100
SHOWN_METRICS = ("auc", "ndcg@10", "map", "mrr", "recall@all_pos")
CATALOG_COLUMN = f"catalog {CATALOG_METRIC}"
DIFF_METRICS = ("auc", "ndcg@10", "map", CATALOG_METRIC)


@dataclass
class Row:
    """One config: its runs, metric means (and sd across its runs) and differences to the reference."""

    label: str
    sources: list[str]
    seeds: list[int]
    experiments: list[int]
    metrics: dict[str, tuple[float | None, float | None]]  # name -> (mean over runs, sd or None)
    played_users: dict[int, int]  # paired users per experiment (the reference row: its evaluated users)
    catalog_users: dict[int, int]
    is_reference: bool = False
    differences: dict[str, Difference] = field(default_factory=dict)
    n_pairs: int = 0

    def as_dict(self) -> dict:
        return {
            "config": self.label,
            "runs": self.sources,
            "seeds": self.seeds,
            "experiments": self.experiments,
            "metrics": {k: {"mean": m, "sd": s} for k, (m, s) in self.metrics.items()},
            "users_paired_played": {str(k): v for k, v in self.played_users.items()},
            "users_paired_catalog": {str(k): v for k, v in self.catalog_users.items()},
            "reference": self.is_reference,
            "seed_pairs": self.n_pairs,
            "differences": {k: d.as_dict() for k, d in self.differences.items()},
        }


@dataclass
class Comparison:
    """The compare table's content; ``notes`` say what was left out or differs, and why."""

    rows: list[Row]
    reference: str
    resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "confidence": 0.95, "unit": "user"},
            "rows": [r.as_dict() for r in self.rows],
            "notes": self.notes,
        }


def _run_metric(run: RunData, name: str) -> float | None:
    """The model's ``name`` averaged over the run's experiments (None if any experiment lacks it)."""
    values = []
    for exp in run.experiments.values():
        if name == CATALOG_COLUMN:
            value = None if exp.catalog is None else float(exp.catalog[CATALOG_METRIC].mean())
        else:
            value = exp.metrics.get(name)
        if value is None:
            return None
        values.append(float(value))
    return float(np.mean(values))


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    if not values or any(v is None for v in values):
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) >= 2 else None)


def _reference_row(group: Group) -> Row:
    first = group.runs[0]
    played = {e: len(x.played) for e, x in sorted(first.experiments.items())}
    catalog = {e: len(x.catalog) for e, x in sorted(first.experiments.items()) if x.catalog is not None}
    return _row(group, played, catalog, is_reference=True)


def _row(group: Group, played: dict, catalog: dict, is_reference: bool = False) -> Row:
    names = (*SHEET_METRICS, CATALOG_COLUMN)  # every sheet metric in the JSON; the table shows SHOWN_METRICS
    metrics = {name: _mean_sd([_run_metric(r, name) for r in group.runs]) for name in names}
    experiments = sorted(set().union(*(r.experiments for r in group.runs)))
    sources = [r.source for r in group.runs]
    return Row(group.label, sources, group.seeds, experiments, metrics, played, catalog, is_reference)


def _group_notes(group: Group, reference: Group) -> list[str]:
    notes = []
    ids = [sorted(r.experiments) for r in group.runs + reference.runs]
    if any(i != ids[0] for i in ids):
        notes.append(f"{group.label}: experiments differ between runs ({ids}); differences use the shared ones")
    if group is not reference:
        changed = differing_keys(reference.runs[0].config, group.runs[0].config, EVALUATION_KEYS)
        if changed:
            notes.append(
                f"{group.label}: evaluation set may differ from the reference ({', '.join(changed)}); "
                "paired on the users (and played lists) both evaluated"
            )
        if len(group.runs) != len(reference.runs):
            notes.append(f"{group.label}: {len(group.runs)} run(s) against the reference's {len(reference.runs)}; "
                         f"{min(len(group.runs), len(reference.runs))} seed pair(s)")
    return notes


def compare_loaded(
    runs: list[RunData],
    reference: RunData | None = None,
    *,
    per_run: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """The comparison of loaded runs; ``reference`` (one of ``runs``) picks the reference row."""
    groups = group_runs(runs, per_run=per_run)
    ref_group = next((g for g in groups if reference is not None and reference in g.runs), groups[0])
    notes = [n for r in runs for n in r.notes]
    if legacy := [r.source for r in runs if r.legacy]:
        notes.append(f"taken as completed without status.json (written before runs carried one): {', '.join(legacy)}")
    _, exp_notes = shared_experiments([r for g in groups for r in g.runs])
    notes += [f"all runs: {n}" for n in exp_notes]
    rows = []
    for group in groups:
        notes += _group_notes(group, ref_group)
        if group is ref_group:
            rows.append(_reference_row(group))
            continue
        pairs = seed_pairs(group, ref_group)
        diffs, played, catalog = {}, {}, {}
        for metric in DIFF_METRICS:
            diffs[metric], users = difference(pairs, metric, resamples, seed)
            if metric == CATALOG_METRIC:
                catalog = users
            elif users:
                played = users
        row = _row(group, played, catalog)
        row.differences, row.n_pairs = diffs, len(pairs)
        rows.append(row)
    rows.sort(key=lambda r: not r.is_reference)  # the reference row first
    return Comparison(rows, ref_group.label, resamples, seed, notes)


def compare_runs(
    run_dirs: list[Path],
    reference: Path | None = None,
    *,
    seeds: int | None = None,
    per_run: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    names: Mapping[Path, str] | None = None,
) -> Comparison:
    """Compare run directories (or config directories, see ``expand_run_args``); ``reference`` defaults to
    the first run. ``names`` maps a directory to the name the output gives it (default: its path)."""
    named = {Path(k): v for k, v in (names or {}).items()}
    dirs = expand_run_args([Path(d) for d in run_dirs], seeds)
    if reference is not None and Path(reference) not in dirs:
        dirs.insert(0, Path(reference))
    runs = [load_run(d, named.get(d)) for d in dirs]
    ref = runs[dirs.index(Path(reference))] if reference is not None else None
    return compare_loaded(runs, ref, per_run=per_run, resamples=resamples, seed=seed)
