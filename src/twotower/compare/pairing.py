"""Which runs form one row, which runs are paired with the reference's, and the paired differences.

Rows: runs with the same config name and the same resolved config apart from ``seed`` (and keys that do
not change results: ``IGNORED_KEYS``) form one row, a config run with several seeds. Runs with the same
name but other keys (e.g. a ``--set`` without a new name) get rows of their own, labelled ``name [2]``.

Seed pairing of a row with the reference row: runs of equal seed are paired; the remaining runs of both
are paired in increasing seed order; runs left over on either side (unequal counts) take part in the
row's metrics but not in its differences.

A difference (row − reference) of one metric is computed per experiment shared by every paired run (same
id, same training and validation days), on the users every paired run evaluated: for played metrics the
same user with the same list (``list_hash``: same items, same labels), for catalog recall@100 the same
user. Each user's difference is averaged over the seed pairs, and ``paired_bootstrap`` gives the mean
over experiments with its interval over users; each seed pair's own estimate is kept for the sd across
seeds (the training noise that resampling users cannot show).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twotower.compare.rundata import CATALOG_METRIC, RunData
from twotower.config_files import flatten
from twotower.evaluate.bootstrap import Interval, paired_bootstrap

# Keys that do not change what a run computes, so runs differing only there are seeds of one config.
IGNORED_KEYS = ("seed", "name", "content.cache_dir", "train.device", "content.blip.device", "tracking.")
# Keys whose change changes the evaluation set (the users and their lists).
EVALUATION_KEYS = ("data.", "filters.", "label.", "history.", "experiments.")


def _kept(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED_KEYS)


def config_key(run: RunData) -> tuple:
    """What makes two runs seeds of one config: the name and every result-changing key."""
    return (run.name, tuple(sorted((k, repr(v)) for k, v in flatten(run.config).items() if _kept(k))))


def differing_keys(a: dict, b: dict, prefixes: tuple[str, ...] | None = None) -> list[str]:
    """Keys (flattened) whose values differ between two configs, optionally only under ``prefixes``."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and _kept(k))
    return [k for k in keys if prefixes is None or k.startswith(prefixes)]


@dataclass
class Group:
    """One row of the table: the runs of one config (one per seed, sorted by seed)."""

    label: str
    runs: list[RunData]

    @property
    def name(self) -> str:
        return self.runs[0].name

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def group_runs(runs: list[RunData], per_run: bool = False) -> list[Group]:
    """Rows in order of first appearance; ``per_run``: one row per run, whatever its config."""
    groups: dict[Any, list[RunData]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(index if per_run else config_key(run), []).append(run)
    out, seen_names = [], {}
    for members in groups.values():
        name = members[0].name
        seen_names[name] = seen_names.get(name, 0) + 1
        label = name if seen_names[name] == 1 else f"{name} [{seen_names[name]}]"
        out.append(Group(label, sorted(members, key=lambda r: r.seed)))
    return out


def seed_pairs(row: Group, reference: Group) -> list[tuple[RunData, RunData]]:
    """(row run, reference run) pairs: equal seeds first, then the rest in seed order (module docstring)."""
    ref_by_seed: dict[int, list[RunData]] = {}
    for run in reference.runs:
        ref_by_seed.setdefault(run.seed, []).append(run)
    pairs, rest = [], []
    for run in row.runs:
        if ref_by_seed.get(run.seed):
            pairs.append((run, ref_by_seed[run.seed].pop(0)))
        else:
            rest.append(run)
    ref_rest = sorted((r for runs in ref_by_seed.values() for r in runs), key=lambda r: r.seed)
    pairs += list(zip(rest, ref_rest, strict=False))
    return pairs


@dataclass
class Difference:
    """Row − reference for one metric: the bootstrap interval (None when nothing could be paired) and each
    seed pair's estimate on the same users."""

    metric: str
    interval: Interval | None
    per_pair: list[float] = field(default_factory=list)
    seeds: list[tuple[int, int]] = field(default_factory=list)  # (row seed, reference seed) per pair
    experiments: list[int] = field(default_factory=list)
    reason: str | None = None

    @property
    def sd(self) -> float | None:
        return float(np.std(self.per_pair, ddof=1)) if len(self.per_pair) >= 2 else None

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            **(self.interval.as_dict() if self.interval else {"estimate": None}),
            "sd_across_seeds": self.sd,
            "per_seed_pair": [
                {"seed": s, "reference_seed": r, "estimate": e} for (s, r), e in zip(self.seeds, self.per_pair, strict=True)
            ]
            if self.per_pair
            else [],
            "experiments": self.experiments,
            "reason": self.reason,
        }


def shared_experiments(runs: list[RunData]) -> tuple[list[int], list[str]]:
    """Experiment ids completed in every run with the same window there; notes for the ones left out."""
    ids = set.intersection(*(set(r.experiments) for r in runs))
    keep, notes = [], []
    for exp_id in sorted(ids):
        windows = {r.experiments[exp_id].window for r in runs}
        if len(windows) == 1:
            keep.append(exp_id)
        else:
            notes.append(f"experiment {exp_id} has other days in some runs ({sorted(windows)}); not paired")
    return keep, notes


def _values(run: RunData, exp_id: int, metric: str) -> pd.DataFrame | None:
    """Per-user values of ``metric`` indexed by the pairing key, or None when the run has none."""
    exp = run.experiments[exp_id]
    if metric == CATALOG_METRIC:
        if exp.catalog is None:
            return None
        return exp.catalog.set_index("user_id")[[metric]]
    return exp.played.set_index(["user_id", "list_hash"])[[metric]]


def difference(
    pairs: list[tuple[RunData, RunData]], metric: str, resamples: int, seed: int
) -> tuple[Difference, dict[int, int]]:
    """The paired difference of ``metric`` (row − reference) and the paired users per experiment."""
    seeds = [(a.seed, b.seed) for a, b in pairs]
    if not pairs:
        return Difference(metric, None, seeds=seeds, reason="no run to pair with the reference"), {}
    runs = [r for pair in pairs for r in pair]
    exp_ids, _ = shared_experiments(runs)
    per_exp: list[np.ndarray] = []  # per experiment: (n_e, S) differences
    used: list[int] = []
    for exp_id in exp_ids:
        columns = []
        for row_run, ref_run in pairs:
            a, b = _values(row_run, exp_id, metric), _values(ref_run, exp_id, metric)
            if a is None or b is None:
                break
            joined = a.set_axis(["row"], axis=1).join(b.set_axis(["ref"], axis=1), how="inner").dropna()
            columns.append(joined["row"] - joined["ref"])
        if len(columns) < len(pairs):
            continue  # a run lacks this metric's file in this experiment
        matrix = pd.concat(columns, axis=1, join="inner").to_numpy(dtype=np.float64)
        if len(matrix):
            per_exp.append(matrix)
            used.append(exp_id)
    n_users = {e: len(m) for e, m in zip(used, per_exp, strict=True)}
    if not per_exp:
        reason = "no shared experiment" if not exp_ids else "no shared users" if metric != CATALOG_METRIC else "n/a"
        return Difference(metric, None, seeds=seeds, reason=reason), n_users
    interval = paired_bootstrap([m.mean(axis=1) for m in per_exp], resamples=resamples, seed=seed)
    per_pair = [float(np.mean([m[:, s].mean() for m in per_exp])) for s in range(len(pairs))]
    return Difference(metric, interval, per_pair, seeds, used), n_users
