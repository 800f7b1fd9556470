"""The sheet's results table in Markdown, with rows for the baselines and optional count columns.

Columns exactly as the sheet: ``Experiment No | auc | avg_prec@10 | map | mrr | ndcg@5 | ndcg@10 | recall@5 |
recall@10 | recall@50 | recall@100 | recall@gt_5 | recall@gt_100 | recall@all_pos``; two decimals, three
for the ``recall@gt_N`` and ``recall@all_pos`` columns (as in the sheet); ``n/a`` for a metric no user
qualified for. ``extra=True`` appends the columns docs/metrics.md asks for beside the sheet's: global_auc,
users, rows, positive share and the user count behind each ``recall@gt_N``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twotower.evaluate.metrics import SHEET_METRICS, RankingMetrics

FIRST_COLUMN = "Experiment No"
NOT_AVAILABLE = "n/a"


def _as_mapping(result: RankingMetrics | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.as_dict() if isinstance(result, RankingMetrics) else result


def _decimals(name: str) -> int:
    return 3 if name.startswith("recall@gt_") or name == "recall@all_pos" else 2


def _fmt(value: Any, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_AVAILABLE
    return f"{float(value):.{decimals}f}"


def _fmt_count(value: Any) -> str:
    return NOT_AVAILABLE if value is None else f"{int(value):,}"


def row_label(experiment: Any, scorer: str) -> str:
    """``1 (model)``, ``1 (random)``, ``1 (popularity)``."""
    return f"{experiment} ({scorer})"


def experiment_rows(
    experiment: Any,
    model: RankingMetrics | Mapping[str, Any] | None = None,
    random: RankingMetrics | Mapping[str, Any] | None = None,
    popularity: RankingMetrics | Mapping[str, Any] | None = None,
    **others: RankingMetrics | Mapping[str, Any],
) -> list[tuple[str, RankingMetrics | Mapping[str, Any]]]:
    """One experiment's rows in table order: model, then the baselines (and any other named scorers)."""
    named = {"model": model, "random": random, "popularity": popularity, **others}
    return [(row_label(experiment, name), result) for name, result in named.items() if result is not None]


def results_table(
    rows: Iterable[tuple[str, RankingMetrics | Mapping[str, Any]]],
    *,
    metrics: Sequence[str] = SHEET_METRICS,
    extra: bool = False,
) -> str:
    """The sheet's results table as Markdown: one row per (label, metrics result or ``as_dict()`` mapping)."""
    rows = [(label, _as_mapping(result)) for label, result in rows]
    gt_names = [name for name in metrics if name.startswith("recall@gt_")]
    header = [FIRST_COLUMN, *metrics]
    if extra:
        header += ["global_auc", "users", "rows", "positive share"]
        header += [f"users {name.removeprefix('recall@')}" for name in gt_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for label, values in rows:
        cells = [str(label)] + [_fmt(values.get(name), _decimals(name)) for name in metrics]
        if extra:
            cells += [
                _fmt(values.get("global_auc"), 3),
                _fmt_count(values.get("n_users")),
                _fmt_count(values.get("n_rows")),
                _fmt(values.get("positive_share"), 3),
            ]
            cells += [_fmt_count(values.get(f"n_users_{name}")) for name in gt_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def left_out_line(result: RankingMetrics | Mapping[str, Any]) -> str:
    """One sentence: users and rows evaluated, users left out and why."""
    d = _as_mapping(result)
    return (
        f"evaluated {d['n_users']:,} of {d['n_users_input']:,} users ({d['n_rows']:,} of "
        f"{d['n_rows_input']:,} rows); left out: {d['n_users_left_out_all_positive']:,} all positive, "
        f"{d['n_users_left_out_all_negative']:,} all negative"
    )
