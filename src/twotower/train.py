"""Training: the epoch count chosen on the last training day, then a refit on every training day.

1. Selection. The LAST training day (max ``day`` of train.parquet; never the validation day) is held out.
   The feature space is fitted on the other days, a model trained on them with Adam, and after every epoch
   the held-out metric is computed (``twotower.selection``: mean per-user AUC for ``bce``, catalog
   recall@100 for ``softmax``); training stops after more than ``patience`` epochs without a better one,
   or after ``epochs``. The objective's rule then chooses the epoch count.
2. Refit (``train.refit = true``, the default). The feature space is fitted on ALL training days and a fresh
   model (same seed) trained on them for the chosen number of epochs: the checkpoint ``model.pt``. With
   ``refit = false`` the checkpoint is the selection model of the chosen epoch (the behaviour before refit
   existed, bit for bit). With one training day, or none of the last day's rows to score (softmax: no
   positive), nothing is held out: ``epochs`` epochs on every day, no refit.

Resumable: after every epoch ``train_state.pt`` (beside ``model.pt``, written atomically) holds the weights,
the optimizer, the curves and the selection's bookkeeping, the batch generator's and every global RNG's
state. ``train_model(..., resume=True)`` continues from it and ends with exactly the checkpoint and curves
of an uninterrupted run. When training ends the state is replaced by a small ``complete`` record holding
the result, so resuming a finished training returns its result without training again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from twotower.checkpoint import load_train_state, resolve_device, rng_state, save_train_state, set_rng_state
from twotower.config import ModelConfig, TrainConfig
from twotower.distributed import Distributed
from twotower.model.batching import day_label
from twotower.progress import say
from twotower.selection import (
    BEST_RULE,
    SMOOTHING_RULE,
    improves,
    smoothed_best_epoch,
)
from twotower.stream.files import ExampleFiles
from twotower.train_data import InMemoryExamples, StreamedExamples
from twotower.train_pass import PassInputs, TrainingPass, deterministic, seed_all, weights

STATE_FILE = "train_state.pt"
EpochCallback = Callable[[str, int], None]  # (phase "select" or "refit", 1-based epoch)


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int  # the epoch count chosen on the held-out day (what the refit trains)
    train_loss: list[float]  # per selection epoch: the objective's loss over its training rows
    holdout_metric: list[float]  # per selection epoch: see holdout_metric_name
    holdout_metric_name: str  # "auc" (mean per-user), "bce" (lower is better), "recall@100" or "none"
    holdout_day: str | None
    examples_per_s: float
    n_train: int  # rows the selection model trained on (softmax: positive rows)
    n_holdout: int  # rows of the held-out day
    objective: str = "bce"
    selection_rule: str = BEST_RULE
    refit: bool = False  # model.pt is the refit model (trained on every training day)
    refit_loss: list[float] = field(default_factory=list)  # per refit epoch
    n_refit: int = 0  # rows the refit trained on

    def as_dict(self) -> dict:
        """Plain values (the model path as a string)."""
        return {**asdict(self), "model_path": str(self.model_path)}


@dataclass
class _Progress:
    """The loop's bookkeeping, saved in the training state after every epoch."""

    phase: str = "select"  # "select", then "refit"
    train_loss: list[float] = field(default_factory=list)
    holdout: list[float] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0
    chosen: int = 0  # 0 until the selection has finished
    refit_loss: list[float] = field(default_factory=list)
    seen: int = 0
    seconds: float = 0.0
    n_train: int = 0
    n_refit: int = 0

    def record(self, loss: float, seen: int, seconds: float) -> None:
        self.seen, self.seconds = self.seen + seen, self.seconds + seconds
        (self.refit_loss if self.phase == "refit" else self.train_loss).append(loss)


class _Training:
    """The two passes of one ``train_model`` call and what they share: the rows (``train_data``), the held-out
    metric, the bookkeeping (``_Progress``) and the training state written after every epoch. With ``dist``,
    rank 0 alone scores the held-out day (the others receive the metric) and writes every file."""

    def __init__(
        self,
        inputs: PassInputs,
        data: InMemoryExamples | StreamedExamples,
        seed: int,
        state_path: Path,
        fingerprint: dict,
        state: dict | None,
        on_epoch_end: EpochCallback | None,
        dist: Distributed | None,
    ):
        self.inputs, self.data, self.name, self.seed = inputs, data, data.name, seed
        self.state_path, self.fingerprint, self.state, self.on_epoch_end = (
            state_path,
            fingerprint,
            state,
            on_epoch_end,
        )
        self.dist, self.main = dist, dist is None or dist.is_main
        cfg = inputs.train_config
        self.do_refit = cfg.refit and self.name != "none"
        self.rule = SMOOTHING_RULE if cfg.objective == "softmax" and self.name != "none" else BEST_RULE
        self.p = _Progress(**state["progress"]) if state is not None else _Progress()

    def _save_state(self, phase: TrainingPass, snapshots: dict[int, dict], epoch: int) -> None:
        payload = {"fingerprint": self.fingerprint, "progress": asdict(self.p), "pass": phase.state()}
        payload |= {"rng": rng_state(), "snapshots": snapshots, "complete": False}
        if self.dist is not None:  # each rank's own generators (they differ between ranks)
            payload["ranks"] = self.dist.gather({"rng": rng_state(), "pass": _generators(phase)})
        if self.main:
            save_train_state(self.state_path, payload)
            say(_epoch_line(self.p, self.name), enabled=bool(self.inputs.progress))
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.p.phase, epoch)

    def _resume(self, phase: TrainingPass, name: str) -> dict[int, dict]:
        """Continue ``phase`` from the loaded state when it was saved in that phase -> its snapshots."""
        if self.state is None or self.state["progress"]["phase"] != name:
            return {}
        saved, rng = self.state["pass"], self.state["rng"]
        if self.dist is not None:  # the weights and optimizer are every rank's; the generators its own
            mine = self.state["ranks"][self.dist.rank]
            saved, rng = saved | mine["pass"], mine["rng"]
        phase.load(saved)
        set_rng_state(rng)
        return self.state["snapshots"]

    def _metric(self, holdout, model) -> float:
        """The held-out metric of this epoch's model (rank 0 scores; every rank gets it)."""
        cfg = self.inputs.train_config
        value = holdout(model, cfg.eval_batch_size, self.inputs.device) if holdout is not None else float("nan")
        return self.dist.share(value) if self.dist is not None else value

    def select(self, path: Path) -> None:
        """Train without the held-out day until the stopping rule ends it, then choose the epoch count; without
        refit, save the chosen epoch's model to ``path``."""
        cfg, p, inputs = self.inputs.train_config, self.p, self.inputs
        select = TrainingPass(inputs, self.data.pass_rows(selection=True), self.seed, self.dist)
        p.n_train = select.n_rows
        holdout = None
        if self.name != "none" and self.main:
            holdout = self.data.holdout(select.features, inputs.users, inputs.catalog)
        snapshots = self._resume(select, "select")
        while not p.chosen:
            epoch = len(p.train_loss) + 1
            p.record(*select.run_epoch(f"epoch {epoch}/{cfg.epochs}"))
            metric = self._metric(holdout, select.model)
            p.holdout.append(metric)
            if self.name == "none" or improves(self.name, metric, p.best):
                p.best, p.best_epoch, p.stale = metric, epoch, 0
            else:
                p.stale += 1
            if not self.do_refit:  # the checkpoint will be one of these epochs' models: keep the candidates
                if self.rule == SMOOTHING_RULE:
                    snapshots[epoch] = weights(select.model)
                elif p.best_epoch == epoch:
                    snapshots = {epoch: weights(select.model)}
            if p.stale > cfg.patience or epoch == cfg.epochs:
                p.chosen = p.best_epoch if self.rule == BEST_RULE else smoothed_best_epoch(p.holdout)
            self._save_state(select, snapshots, epoch)
        if self.do_refit:
            p.phase = "refit"
        elif self.main:
            select.load_weights(snapshots[p.chosen])
            select.save(path, _meta(p, self.name, self.seed, cfg.objective, refit=False))

    def refit(self, path: Path) -> None:
        """A fresh model on every training day for the chosen number of epochs, saved to ``path``."""
        p = self.p
        seed_all(self.seed)  # initialised as any run with this seed initialises its model
        final = TrainingPass(self.inputs, self.data.pass_rows(selection=False), self.seed, self.dist)
        p.n_refit = final.n_rows
        self._resume(final, "refit")
        while len(p.refit_loss) < p.chosen:
            epoch = len(p.refit_loss) + 1
            p.record(*final.run_epoch(f"refit epoch {epoch}/{p.chosen}"))
            self._save_state(final, {}, epoch)
        if self.main:
            final.save(path, _meta(p, self.name, self.seed, self.inputs.train_config.objective, refit=True))


def _generators(phase: TrainingPass) -> dict:
    return {"generator": phase.generator.get_state(), "order": phase.order.get_state()}


def _fingerprint(
    model_config: ModelConfig, train_config: TrainConfig, data: InMemoryExamples | StreamedExamples, seed: int,
    dist: Distributed | None,
) -> dict:  # fmt: skip
    """What a training state must match to be resumed: the configs, the seed, the training rows and (when
    several) the number of processes."""
    out = {
        "model_config": model_config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"),
        "seed": seed,
        **data.fingerprint(),
    }
    return out | {"world_size": dist.world_size} if dist is not None else out


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_df: pd.DataFrame | ExampleFiles,
    history_df: pd.DataFrame | None,
    users_df: pd.DataFrame | None,
    item_table: pd.DataFrame | None,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool | None = None,
    catalog: pd.DataFrame | None = None,
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
    dist: Distributed | None = None,
) -> TrainResult:
    """Choose the epoch count on the last training day, refit on every day (module docstring), save
    ``out_dir/model.pt``. ``train_df``: the rows (train.parquet layout), or ``ExampleFiles`` (train.parquet and
    history.parquet, which then replaces ``history_df``): streamed when ``train_config.shuffle_buffer`` > 0,
    else read into memory. ``catalog``: catalog.parquet (day, item_id, creator_id, ITEM_BASE, CREATOR_BASE),
    required by ``objective = "softmax"``. ``resume``: continue from ``out_dir/train_state.pt`` when it
    exists. ``on_epoch_end(phase, epoch)`` runs after each epoch's state is saved. ``dist``: this process
    among several (``twotower.distributed``); rank 0 alone writes files. The per-epoch bar shows only on a
    terminal; ``progress=True`` also prints one line per epoch."""
    out_dir = Path(out_dir)
    main = dist is None or dist.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    path, state_path, cfg = out_dir / "model.pt", out_dir / STATE_FILE, train_config
    if cfg.objective == "softmax" and catalog is None:
        raise ValueError(
            "train.objective 'softmax' needs the catalog (catalog.parquet of the prepared directory)"
        )
    data = _examples(model_config, cfg, train_df, history_df, users_df, item_table, dist)
    fingerprint = _fingerprint(model_config, cfg, data, seed, dist)
    state = load_train_state(state_path) if resume and main else None
    state = dist.share(state) if dist is not None else state
    if state is not None and state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{state_path} was written by another training (config, seed or rows); delete it to start over"
        )
    if state is not None and state["complete"]:
        if path.exists() or not main:
            return TrainResult(**{**state["result"], "model_path": path})
        state = None  # the model it describes is gone: train again
    device = dist.device if dist is not None else resolve_device(cfg.device)
    history = data.history if isinstance(data, InMemoryExamples) else None
    inputs = PassInputs(model_config, cfg, history, users_df, item_table, catalog, device, progress)
    run = _Training(inputs, data, seed, state_path, fingerprint, state, on_epoch_end, dist)
    with deterministic(seed, device):
        if run.p.phase == "select":
            run.select(path)
        if run.p.phase == "refit":
            run.refit(path)
    p, name = run.p, data.name
    result = TrainResult(
        model_path=path,
        best_epoch=p.chosen,
        train_loss=p.train_loss,
        holdout_metric=p.holdout,
        holdout_metric_name=name,
        holdout_day=day_label(data.last_day) if name != "none" else None,
        examples_per_s=p.seen / max(p.seconds, 1e-9),
        n_train=p.n_train,
        n_holdout=data.n_holdout,
        objective=cfg.objective,
        selection_rule=run.rule,
        refit=run.do_refit,
        refit_loss=p.refit_loss,
        n_refit=p.n_refit,
    )
    if main:
        save_train_state(state_path, {"fingerprint": fingerprint, "complete": True, "result": result.as_dict()})
    return result


def _examples(
    model_config: ModelConfig, cfg: TrainConfig, train: pd.DataFrame | ExampleFiles, history: pd.DataFrame | None,
    users: pd.DataFrame | None, item_table: pd.DataFrame | None, dist: Distributed | None,
) -> InMemoryExamples | StreamedExamples:  # fmt: skip
    """The rows as the configured input path reads them."""
    if cfg.shuffle_buffer > 0:
        if not isinstance(train, ExampleFiles):
            raise ValueError(
                f"train.shuffle_buffer = {cfg.shuffle_buffer} streams the prepared Parquet: pass the files "
                "(ExampleFiles), not rows in memory; or set train.shuffle_buffer = 0"
            )
        return StreamedExamples(train, model_config, cfg.objective, users, item_table, dist)
    if isinstance(train, ExampleFiles):
        history = pd.read_parquet(train.history_path) if train.history_path is not None else history
        train = pd.read_parquet(train.train_path)
    return InMemoryExamples(train, history, cfg.objective)


def _epoch_line(p: _Progress, name: str) -> str:
    if p.phase == "refit":
        return f"refit epoch {len(p.refit_loss)}/{p.chosen}: train loss {p.refit_loss[-1]:.4f}"
    return (
        f"epoch {len(p.train_loss)}: train loss {p.train_loss[-1]:.4f}, held-out {name} {p.holdout[-1]:.4f}"
    )


def _meta(p: _Progress, name: str, seed: int, objective: str, refit: bool) -> dict:
    """The checkpoint's ``meta``: the chosen epoch and its held-out metric (of the selection model)."""
    metric = p.holdout[p.chosen - 1]
    return {
        "epoch": p.chosen,
        "metric": metric,
        "metric_name": name,
        "seed": seed,
        "objective": objective,
        "refit": refit,
    }
