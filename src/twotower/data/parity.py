"""Two prepared directories compared table by table: the check that Spark and DuckDB prepare the same data.

Every table of ``outdir.OUTPUTS`` that either directory holds must be in both, with the same columns in the
same order and the same Arrow types (nullability aside: Spark marks columns it knows are never null), and
the same rows once both are sorted by every scalar column; floats may differ by ``tolerance`` (absolute
or relative), list columns must be equal element by element. ``funnel.json`` must agree in its steps, drops
and notes (apart from the engine's description and the step timings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from twotower.data.outdir import OUTPUTS
from twotower.data.prepared import read_arrow
from twotower.data.storage import locate

# The leading sort keys per table (then every other scalar column), so that equal rows line up.
KEYS = {
    "train": ("day", "user_id", "ts_ms", "item_id"),
    "eval": ("user_id", "item_id"),
    "history": ("day", "user_id"),
    "catalog": ("day", "item_id"),
    "retrieval_users": ("user_id",),
    "retrieval_targets": ("user_id", "item_id"),
    "seen": ("user_id", "item_id"),
    "items": ("item_id",),
    "users": ("user_id",),
    "popularity": ("item_id",),
}
FUNNEL_NOTES_IGNORED = ("engine", "step_seconds")


@dataclass
class Parity:
    """What was compared (table -> rows) and every difference found (empty: the same data)."""

    rows: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences


def _types(table: pa.Table) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in table.schema]


def _sorted(frame: pd.DataFrame, name: str, lists: list[str]) -> pd.DataFrame:
    keys = [c for c in KEYS.get(name, ()) if c in frame] + [c for c in frame if c not in lists and c not in KEYS.get(name, ())]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def compare_table(name: str, left: pa.Table, right: pa.Table, tolerance: float) -> list[str]:
    """Differences between two versions of one table (see the module docstring)."""
    if _types(left) != _types(right):
        return [f"{name}: columns and types differ: {_types(left)} vs {_types(right)}"]
    if left.num_rows != right.num_rows:
        return [f"{name}: {left.num_rows} rows vs {right.num_rows}"]
    lists = [f.name for f in left.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    a, b = _sorted(left.to_pandas(), name, lists), _sorted(right.to_pandas(), name, lists)
    found = []
    for column in a.columns:
        x, y = a[column], b[column]
        if column in lists:
            same = np.array([list(u) == list(v) for u, v in zip(x, y, strict=True)], dtype=bool)
        elif pd.api.types.is_float_dtype(x):
            same = np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=tolerance, atol=tolerance, equal_nan=True)
        else:
            same = ((x == y) | (x.isna() & y.isna())).to_numpy(bool)
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            found.append(f"{name}.{column}: {int((~same).sum())} rows differ (first: {x.iloc[row]!r} vs {y.iloc[row]!r})")
    return found


def compare_prepared(
    left: str | Path, right: str | Path, tolerance: float = 1e-9, ignore_notes: tuple[str, ...] = FUNNEL_NOTES_IGNORED
) -> Parity:
    """Compare two prepared directories (local paths or URIs); see the module docstring. ``ignore_notes``:
    funnel notes that may differ (e.g. ``sources`` when one side read the data through a URI)."""
    result = Parity()
    a, b = locate(left), locate(right)
    for name in OUTPUTS:
        here, there = (a / f"{name}.parquet").exists(), (b / f"{name}.parquet").exists()
        if here != there:
            result.differences.append(f"{name}.parquet: only in {a if here else b}")
            continue
        if not here:
            continue
        table_a, table_b = read_arrow(a / f"{name}.parquet"), read_arrow(b / f"{name}.parquet")
        result.rows[name] = table_a.num_rows
        result.differences += compare_table(name, table_a, table_b, tolerance)
    funnels = [json.loads((d / "funnel.json").read_text()) for d in (a, b)]
    for part in ("steps", "drops"):
        if funnels[0][part] != funnels[1][part]:
            result.differences.append(f"funnel.json {part} differ: {funnels[0][part]} vs {funnels[1][part]}")
    notes = [{k: v for k, v in f["notes"].items() if k not in ignore_notes} for f in funnels]
    if notes[0] != notes[1]:
        keys = sorted(k for k in set(notes[0]) | set(notes[1]) if notes[0].get(k) != notes[1].get(k))
        result.differences.append(f"funnel.json notes differ in {keys}")
    return result
