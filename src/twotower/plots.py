"""Plots of a run (PNG files): the model against its baselines, and the training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from twotower.evaluate.metrics import SHEET_METRICS  # noqa: E402
from twotower.io import write_atomic  # noqa: E402
from twotower.outcome import ExperimentOutcome  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def plot_metrics(outcomes: list[ExperimentOutcome], path: Path) -> None:
    """Grouped bars: each metric for the model and the baselines, one panel per experiment."""
    done = [o for o in outcomes if o.metrics]
    if not done:
        return
    fig, axes = plt.subplots(len(done), 1, figsize=(13, 3.6 * len(done)), squeeze=False)
    for ax, o in zip(axes[:, 0], done, strict=True):
        names = list(o.metrics)
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [o.metrics[name].get(m) for m in SHEET_METRICS]
            xs = [x + i * width for x in range(len(SHEET_METRICS))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name)
            for x, v in zip(xs, values, strict=True):
                if v is None:  # no user qualified: say so rather than draw a zero
                    ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(SHEET_METRICS))], SHEET_METRICS, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"experiment {o.experiment.id}: model vs baselines (played re-ranking)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_training(outcomes: list[ExperimentOutcome], path: Path) -> None:
    """Training loss and held-out metric per epoch for every experiment."""
    done = [o for o in outcomes if o.training is not None]
    if not done:
        return
    fig, (loss_ax, hold_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    name = done[0].training["holdout_metric_name"]
    for o in done:
        t = o.training
        loss, held = t["train_loss"], t.get(f"holdout_{t['holdout_metric_name']}", [])
        loss_ax.plot(range(1, len(loss) + 1), loss, marker="o", label=f"experiment {o.experiment.id}")
        hold_ax.plot(range(1, len(held) + 1), held, marker="o", label=f"experiment {o.experiment.id}")
    loss_ax.set(title="training loss", xlabel="epoch")
    hold_ax.set(title=f"held-out last training day: {name}", xlabel="epoch")
    loss_ax.legend()
    hold_ax.legend()
    _save(fig, path)


def plot_recommended_popularity(
    lists: dict[str, np.ndarray], catalog_ids: np.ndarray, plays: np.ndarray, path: Path
) -> None:
    """Cumulative share of recommendations (every slot of every top list) and of catalog items by the
    item's training-window plays: a list that hugs the right edge recommends only the most played items."""
    order = np.argsort(catalog_ids)
    ids_sorted, plays_sorted = catalog_ids[order], plays[order]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    grid = np.unique(np.concatenate([[0.0], plays]))
    ax.step(grid, np.searchsorted(np.sort(plays), grid, side="right") / max(len(plays), 1), where="post",
            label=f"catalog ({len(plays):,} items)", color="black", linewidth=2)
    for name, top in lists.items():
        listed = top[top >= 0]
        pos = np.searchsorted(ids_sorted, listed).clip(0, max(len(ids_sorted) - 1, 0))
        listed_plays = np.sort(plays_sorted[pos])
        distinct = len(np.unique(listed))
        ax.step(grid, np.searchsorted(listed_plays, grid, side="right") / max(len(listed_plays), 1), where="post",
                label=f"{name} top 100 ({distinct:,} distinct items)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(xlabel="training-window plays of the item", ylabel="cumulative share", title="popularity of recommended items vs the catalog")
    ax.legend(fontsize=8)
    _save(fig, path)
