"""The comparison as a Markdown table, JSON and a plot of the differences with their intervals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from twotower.compare import CATALOG_COLUMN, DIFF_METRICS, SHOWN_METRICS, Comparison, Row  # noqa: E402
from twotower.compare.pairing import Difference  # noqa: E402
from twotower.compare.rundata import CATALOG_METRIC, CompareError  # noqa: E402
from twotower.io import write_atomic, write_json, write_text  # noqa: E402

NOT_AVAILABLE = "n/a"
FILES = ("compare.md", "compare.json", "compare.png")


def _diff_name(metric: str) -> str:
    return f"catalog {metric}" if metric == CATALOG_METRIC else metric


def _value(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return NOT_AVAILABLE
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def _users(counts: dict[int, int]) -> str:
    return " / ".join(f"{n:,}" for _, n in sorted(counts.items())) if counts else NOT_AVAILABLE


def _diff_cell(diff: Difference) -> str:
    if diff.interval is None:
        return NOT_AVAILABLE
    i = diff.interval
    sd = f" ± {diff.sd:.4f}" if diff.sd is not None else ""
    mark = " *" if i.excludes_zero else ""
    return f"{i.estimate:+.4f}{sd} [{i.low:+.4f}, {i.high:+.4f}]{mark}"


def _cells(row: Row) -> list[str]:
    cells = [row.label, ", ".join(str(s) for s in row.seeds), ", ".join(str(e) for e in row.experiments)]
    cells += [_value(*row.metrics[name]) for name in (*SHOWN_METRICS, CATALOG_COLUMN)]
    cells += [_users(row.played_users), _users(row.catalog_users)]
    if row.is_reference:
        cells += ["reference"] * len(DIFF_METRICS)
    else:
        cells += [_diff_cell(row.differences[m]) for m in DIFF_METRICS]
    return cells


def markdown(comparison: Comparison) -> str:
    """The table with a legend and the notes, as Markdown."""
    header = ["config", "seeds", "experiments", *SHOWN_METRICS, CATALOG_COLUMN]
    header += ["users (played)", "users (catalog)", *[f"Δ {_diff_name(m)}" for m in DIFF_METRICS]]
    lines = [f"# Compare (reference: {comparison.reference})", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(row)) + " |" for row in comparison.rows]
    lines += [
        "",
        "- Metric columns: the model's value averaged over the run's experiments (played re-ranking; catalog "
        "recall@100 from retrieval_per_user.parquet); `± sd` across the config's seeds.",
        "- Users: per experiment, the users behind the differences (the reference row: the users it evaluated); "
        "played: the same user with the same list (items and labels) in both runs; catalog: the same user.",
        "- Δ = row − reference: mean over the shared experiments of the mean per-user difference, averaged over "
        f"seed pairs; [low, high] = 95% paired-bootstrap percentile interval over users ({comparison.resamples:,} "
        f"resamples within each experiment, seed {comparison.seed}); `*` = the interval excludes 0; `± sd` after "
        "Δ: sd of the difference across seed pairs (training noise, which the interval over users does not hold).",
    ]
    if comparison.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in comparison.notes]]
    return "\n".join(lines) + "\n"


def plot(comparison: Comparison, path: Path) -> Path | None:
    """One panel per difference metric: each row's Δ with its interval; filled when it excludes zero."""
    rows = [r for r in comparison.rows if not r.is_reference]
    metrics = [m for m in DIFF_METRICS if any(r.differences[m].interval for r in rows)]
    if not rows or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.6 * len(rows) + 1.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for y, row in enumerate(rows):
            i = row.differences[metric].interval
            if i is None:
                ax.text(0, y, NOT_AVAILABLE, ha="center", va="center", fontsize=8)
                continue
            ax.errorbar(
                i.estimate, y, xerr=[[i.estimate - i.low], [i.high - i.estimate]], fmt="o", capsize=4,
                color="C3" if i.excludes_zero else "C0", markerfacecolor="C3" if i.excludes_zero else "white",
            )
        ax.axvline(0, color="grey", linewidth=1)
        ax.set_yticks(range(len(rows)), [r.label for r in rows] if ax is axes[0][0] else [""] * len(rows))
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(f"Δ {_diff_name(metric)}")
    fig.suptitle(f"difference to {comparison.reference} with 95% paired-bootstrap interval over users", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def write_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` in ``out_dir``; an earlier comparison there is
    never overwritten (``CompareError``: choose another directory)."""
    out_dir = Path(out_dir)
    existing = [name for name in FILES if (out_dir / name).exists()]
    if existing:
        raise CompareError(f"{out_dir} already holds {', '.join(existing)}; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_text(out_dir / "compare.md", markdown(comparison)), write_json(out_dir / "compare.json", comparison.as_dict())]
    image = plot(comparison, out_dir / "compare.png")
    return written + ([image] if image else [])
