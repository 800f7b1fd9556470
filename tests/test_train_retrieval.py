"""The retrieval objective trained end to end on a log with planted structure, its held-out catalog recall
and epoch rule, and resumable training (a run stopped after an epoch and resumed equals an uninterrupted one)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.retrieval_log import planted_log, recall_at
from tests.test_model import small_config, synthetic
from twotower.checkpoint import load_checkpoint
from twotower.config import TrainConfig
from twotower.inference import embed_items, embed_users
from twotower.selection import smoothed, smoothed_best_epoch
from twotower.train import STATE_FILE, train_model

RETRIEVAL_MODEL = small_config(
    user_features=("pos_mean_hist_emb",),
    item_features=("content", "item_base"),
    normalize=True,
    temperature=0.2,
)
SOFTMAX = TrainConfig(
    objective="softmax", batch_size=128, negatives=64, epochs=4, patience=4, learning_rate=3e-3, device="cpu"
)


@pytest.fixture(scope="module")
def log() -> dict:
    return planted_log()


def _train_softmax(log: dict, out, train_cfg: TrainConfig = SOFTMAX, **kw):
    return train_model(
        RETRIEVAL_MODEL, train_cfg, log["train"], log["history"], None, log["item_table"], out,
        catalog=log["catalog"], **kw,
    )  # fmt: skip


def _catalog_scores(bundle, log: dict, rows, day) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every catalog item of ``day`` scored for the users with a positive in ``rows`` (brute force)."""
    users = np.sort(rows.loc[rows["label"] == 1, "user_id"].unique())
    user_rows = rows.drop_duplicates("user_id").set_index("user_id").loc[users].reset_index()
    catalog = log["catalog"][log["catalog"]["day"] == day].reset_index(drop=True)
    scores = embed_users(bundle, user_rows, log["history"]) @ embed_items(bundle, catalog).T
    return scores, users, catalog["item_id"].to_numpy()


def test_smoothed_epoch_rule_by_hand():
    values = [0.30, 0.38, 0.31, 0.36, 0.37, 0.30]  # the best single epoch (2) sits between two poor ones
    expected = [
        (0.30 + 0.38) / 2,
        (0.30 + 0.38 + 0.31) / 3,
        (0.38 + 0.31 + 0.36) / 3,  # 0.35: the highest
        (0.31 + 0.36 + 0.37) / 3,
        (0.36 + 0.37 + 0.30) / 3,
        (0.37 + 0.30) / 2,
    ]
    np.testing.assert_allclose(smoothed(values), expected, rtol=1e-5)
    assert smoothed_best_epoch(values) == 3 and smoothed_best_epoch([0.2]) == 1


def test_softmax_beats_popularity_on_the_next_day(log, tmp_path):
    """Popularity ignores the users' planted topic; the model reads it from the history's content."""
    result = _train_softmax(log, tmp_path)
    assert result.objective == "softmax" and result.holdout_metric_name == "recall@100" and result.refit
    train = log["train"]
    assert result.n_train == int(train.loc[train["day"] < train["day"].max(), "label"].sum())  # positives
    assert len(result.refit_loss) == result.best_epoch == smoothed_best_epoch(result.holdout_metric)
    day = log["eval"]["day"].iloc[0]
    scores, users, items = _catalog_scores(load_checkpoint(result.model_path), log, log["eval"], day)
    targets = log["eval"].loc[log["eval"]["label"] == 1, ["user_id", "item_id"]]
    positives = log["train"][log["train"]["label"] == 1]["item_id"].value_counts()
    popularity = np.tile(positives.reindex(items, fill_value=0).to_numpy(float), (len(users), 1))
    model, baseline = (recall_at(s, users, targets, items, 20) for s in (scores, popularity))
    assert model > baseline + 0.08, (model, baseline)


def test_held_out_recall_is_brute_force_catalog_recall(log, tmp_path):
    """Without refit the checkpoint is the selection model; its recorded held-out recall@100 is every catalog
    item of the held-out day scored through the towers, the day's positives as targets."""
    result = _train_softmax(log, tmp_path, SOFTMAX.model_copy(update={"refit": False, "epochs": 2}))
    bundle = load_checkpoint(result.model_path)
    last = log["train"]["day"].max()
    held = log["train"][log["train"]["day"] == last]
    scores, users, items = _catalog_scores(bundle, log, held, last)
    targets = held.loc[held["label"] == 1, ["user_id", "item_id"]]
    assert bundle.meta["epoch"] == result.best_epoch and not bundle.meta["refit"]
    assert bundle.meta["metric"] == pytest.approx(recall_at(scores, users, targets, items, 100), abs=1e-9)
    assert result.holdout_day == str(last)


def test_softmax_needs_a_catalog_for_every_training_day(log, tmp_path):
    with pytest.raises(ValueError, match="needs the catalog"):
        _train_softmax({**log, "catalog": None}, tmp_path)
    first = log["catalog"]["day"].min()
    with pytest.raises(ValueError, match=f"no items for training day {first}"):
        _train_softmax({**log, "catalog": log["catalog"][log["catalog"]["day"] != first]}, tmp_path)


class Stop(Exception):
    """Stands in for the process being killed after an epoch's state was written."""


def _stop_at(phase: str, epoch: int):
    def callback(p: str, e: int) -> None:
        if (p, e) == (phase, epoch):
            raise Stop

    return callback


BCE = TrainConfig(batch_size=64, epochs=3, learning_rate=1e-3, patience=3, device="cpu")  # chooses epoch 2
DROPOUT_MODEL = small_config(dropout=0.3)  # dropout draws from torch's global generator: resumed exactly?


def _train_bce(data: dict, out, **kw):
    return train_model(
        DROPOUT_MODEL,
        BCE,
        data["train"],
        data["history"],
        data["users"],
        data["item_table"],
        out,
        seed=5,
        **kw,
    )


def _same_result(a, b) -> None:
    assert (
        torch.load(a.model_path, weights_only=True)["meta"]
        == torch.load(b.model_path, weights_only=True)["meta"]
    )
    wa, wb = (load_checkpoint(r.model_path).model.state_dict() for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    da, db = a.as_dict(), b.as_dict()
    for key in ("model_path", "examples_per_s"):
        da.pop(key), db.pop(key)
    assert da == db


@pytest.fixture(scope="module")
def bce_data() -> dict:
    return synthetic()


@pytest.fixture(scope="module")
def uninterrupted_bce(bce_data, tmp_path_factory):
    return _train_bce(bce_data, tmp_path_factory.mktemp("whole"))


@pytest.mark.parametrize("stop", [("select", 1), ("select", 3), ("refit", 1)])
def test_bce_resumed_after_an_epoch_equals_an_uninterrupted_run(bce_data, uninterrupted_bce, tmp_path, stop):
    assert uninterrupted_bce.refit and uninterrupted_bce.best_epoch >= 2  # the refit has an epoch to resume
    with pytest.raises(Stop):
        _train_bce(bce_data, tmp_path, on_epoch_end=_stop_at(*stop))
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert not state["complete"] and state["progress"]["phase"] == stop[0]
    epochs: list = []
    resumed = _train_bce(bce_data, tmp_path, resume=True, on_epoch_end=lambda p, e: epochs.append((p, e)))
    _same_result(resumed, uninterrupted_bce)
    assert epochs[0] == (stop[0], stop[1] + 1) or (stop == ("select", 3) and epochs[0] == ("refit", 1))
    # finished: the state is a small "complete" record, and resuming again trains nothing
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["complete"]
    again = _train_bce(bce_data, tmp_path, resume=True, on_epoch_end=_stop_at("select", 1))
    _same_result(again, uninterrupted_bce)


def test_softmax_resumed_equals_uninterrupted(log, tmp_path):
    cfg = SOFTMAX.model_copy(update={"epochs": 2, "patience": 2})
    whole = _train_softmax(log, tmp_path / "whole", cfg)
    with pytest.raises(Stop):
        _train_softmax(log, tmp_path / "cut", cfg, on_epoch_end=_stop_at("select", 1))
    _same_result(_train_softmax(log, tmp_path / "cut", cfg, resume=True), whole)


def test_a_state_from_another_set_up_is_refused(bce_data, tmp_path):
    with pytest.raises(Stop):
        _train_bce(bce_data, tmp_path, on_epoch_end=_stop_at("select", 1))
    with pytest.raises(ValueError, match="another training"):
        train_model(
            DROPOUT_MODEL, BCE, bce_data["train"], bce_data["history"], bce_data["users"], bce_data["item_table"],
            tmp_path, seed=6, resume=True,
        )  # fmt: skip


def test_a_run_trains_the_softmax_objective_from_the_prepared_catalog(tmp_path):
    """The pipeline hands prepare's catalog.parquet to training (the hand-built log, 3 training days). Its last
    training day has no positive row left after the filters: nothing to hold out, every day trains."""
    from tests.test_pipeline import _config
    from twotower.pipeline import run

    cfg = _config(tmp_path)
    train = TrainConfig(epochs=2, batch_size=4, objective="softmax", negatives=3)
    cfg = cfg.model_copy(update={"train": train, "model": cfg.model.model_copy(update={"normalize": True})})
    run_dir = run(cfg, tmp_path / "runs", progress=False)
    training = json.loads((run_dir / "experiment_1" / "training.json").read_text())
    train = pd.read_parquet(run_dir / "experiment_1" / "prepared" / "train.parquet")
    assert training["objective"] == "softmax" and training["holdout_metric_name"] == "none"
    assert training["n_train"] == int(train["label"].sum()) and training["n_holdout"] == 0
    assert not training["refit"] and training["best_epoch"] == len(training["train_loss"]) == 2
    assert torch.load(run_dir / "experiment_1" / "train_state.pt", weights_only=True)["complete"]


@pytest.mark.parametrize(
    ("train", "key"),
    [
        ({"objective": "softmx"}, "train.objective"),
        ({"negatives": -1}, "train.negatives"),
        ({"refit": "maybe"}, "train.refit"),
    ],
)
def test_train_keys_are_validated(tmp_path, train, key):
    from tests.tinylog import tiny_config_dict
    from twotower.config import ConfigError, parse_config

    raw = tiny_config_dict(tmp_path / "events.parquet", tmp_path / "items.parquet", train=train)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(raw)
