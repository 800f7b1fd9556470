"""Training loop, early stopping on the last training day, refit, checkpoints, scoring and the retrieval identity."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.test_model import ALL_ITEM, ALL_USER, small_config, synthetic
from twotower.checkpoint import load_checkpoint
from twotower.config import TrainConfig
from twotower.data.schema import CREATOR_BASE, ITEM_BASE, USER_BASE
from twotower.evaluate.metrics import mean_user_auc
from twotower.inference import embed_items, embed_users, score
from twotower.train import train_model

# refit = false: the checkpoint is the selection model (trained without the held-out day), whose held-out
# metric the tests below reproduce; the refit has tests of its own.
FAST = TrainConfig(batch_size=64, epochs=4, learning_rate=1e-2, patience=1, device="cpu", refit=False)


def _train(data: dict, out, cfg=None, train_cfg=FAST, seed=0):
    cfg = cfg or small_config()
    return train_model(
        cfg,
        train_cfg,
        data["train"],
        data["history"],
        data["users"],
        data["item_table"],
        out,
        seed=seed,
    )


@pytest.fixture(scope="module")
def data() -> dict:
    return synthetic()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    return _train(data, tmp_path_factory.mktemp("run"))


def test_mean_user_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 12)
    labels = rng.integers(0, 2, len(users))
    labels[users == 5] = 1  # one user without a negative: skipped
    scores = np.round(rng.normal(size=len(users)), 1)  # ties
    expected = np.mean([roc_auc_score(labels[users == u], scores[users == u]) for u in range(5)])
    mean, n = mean_user_auc(users, labels, scores)
    assert n == 5 and mean == pytest.approx(expected)
    assert np.isnan(mean_user_auc(np.zeros(3), np.ones(3), np.arange(3))[0])


def test_training_holds_out_the_last_training_day_and_saves_the_best_epoch(data, trained):
    last_day = data["train"]["day"].max()
    assert trained.holdout_day == str(last_day)
    assert trained.n_holdout == int((data["train"]["day"] == last_day).sum())
    assert trained.n_train + trained.n_holdout == len(data["train"])
    assert trained.holdout_metric_name == "auc"
    assert 1 <= len(trained.train_loss) == len(trained.holdout_metric) <= FAST.epochs
    best = int(np.argmax(trained.holdout_metric)) + 1
    assert trained.best_epoch == best and trained.examples_per_s > 0
    ckpt = torch.load(trained.model_path, weights_only=True)  # plain values and tensors only
    assert ckpt["meta"]["epoch"] == best and ckpt["meta"]["metric"] == pytest.approx(
        max(trained.holdout_metric)
    )
    assert ckpt["model_config"]["user_features"] == list(small_config().user_features)


def test_checkpoint_rebuilds_the_model_alone(data, trained):
    bundle = load_checkpoint(trained.model_path)
    logits = score(bundle, data["eval"], data["history"], data["users"])
    assert logits.shape == (len(data["eval"]),) and np.isfinite(logits).all()
    # the held-out metric recorded in the checkpoint is reproduced from the file
    held = data["train"][data["train"]["day"] == data["train"]["day"].max()]
    auc, _ = mean_user_auc(
        held["user_id"].to_numpy(),
        held["label"].to_numpy(),
        score(bundle, held, data["history"], data["users"]),
    )
    assert auc == pytest.approx(bundle.meta["metric"], abs=1e-6)
    # unseen users/items/creators (out of vocabulary) still score
    odd = data["eval"].head(3).assign(user_id=-5, item_id=-6, creator_id=-7)
    assert np.isfinite(score(bundle, odd, data["history"], data["users"])).all()
    # creator_id is joined once, in prepare: rows without it are an error, never a silent "unknown creator"
    with pytest.raises(KeyError, match="creator_id"):
        score(bundle, data["eval"].drop(columns="creator_id"), data["history"], data["users"])


def test_same_seed_gives_identical_results_and_another_seed_does_not(data, trained, tmp_path):
    again = _train(data, tmp_path / "a")
    assert again.train_loss == trained.train_loss and again.holdout_metric == trained.holdout_metric
    a = load_checkpoint(trained.model_path).model.state_dict()
    b = load_checkpoint(again.model_path).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = _train(data, tmp_path / "b", seed=1)
    assert other.train_loss != trained.train_loss


def test_item_bias_learns_the_item_level_signal(data, tmp_path):
    """Labels depend on a per-item quality: a model with only the item bias (and id) must rank by it."""
    cfg = small_config(user_features=("context",), item_features=("item_id",), item_bias=True)
    result = _train(
        data,
        tmp_path,
        cfg,
        TrainConfig(batch_size=64, epochs=8, learning_rate=3e-2, patience=8, device="cpu"),
    )
    bundle = load_checkpoint(result.model_path)
    items = pd.DataFrame({"item_id": sorted(data["quality"])})
    bias = embed_items(bundle, items)[:, -1]
    quality = np.array([data["quality"][i] for i in items["item_id"]])
    assert np.corrcoef(bias, quality)[0, 1] > 0.6
    # and it generalises to the evaluation day
    logits = score(bundle, data["eval"], data["history"], data["users"])
    assert (
        mean_user_auc(data["eval"]["user_id"].to_numpy(), data["eval"]["label"].to_numpy(), logits)[0] > 0.65
    )


def test_faiss_inner_product_index_reproduces_the_logits(data, tmp_path):
    faiss = pytest.importorskip("faiss")
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM, normalize=True)
    bundle = load_checkpoint(_train(data, tmp_path, cfg, FAST.model_copy(update={"epochs": 1})).model_path)
    day = data["eval"]
    user_side = day.drop_duplicates("user_id")[["user_id", "day", "dow", "hour", *USER_BASE]].head(10)
    item_side = day.drop_duplicates("item_id")[["item_id", "creator_id", *ITEM_BASE, *CREATOR_BASE]]
    queries = embed_users(bundle, user_side, data["history"], data["users"])
    keys = embed_items(bundle, item_side)
    assert queries.shape == (len(user_side), 9) and keys.shape == (len(item_side), 9)
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(keys, dtype=np.float32))
    found, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), len(item_side))
    # every (user, item) pair of the cross product scored directly through the model
    cross = user_side.merge(item_side, how="cross")
    direct = score(bundle, cross, data["history"], data["users"]).reshape(len(user_side), len(item_side))
    np.testing.assert_allclose(found, np.take_along_axis(direct, ids, axis=1), rtol=1e-4, atol=1e-4)


def test_single_training_day_trains_without_holdout(data, tmp_path):
    one_day = {**data, "train": data["train"][data["train"]["day"] == data["train"]["day"].min()]}
    result = _train(one_day, tmp_path, train_cfg=FAST.model_copy(update={"epochs": 2}))
    assert result.holdout_metric_name == "none" and result.best_epoch == 2 and result.holdout_day is None
    assert result.model_path.exists()


def test_day_column_types_do_not_matter(data, tmp_path):
    """history.parquet may come back with timestamps where train.parquet has dates."""
    history = data["history"].assign(day=pd.to_datetime(data["history"]["day"]))
    cfg = small_config(user_features=("pos_mean_hist_emb",), item_features=("content",))
    bundle = load_checkpoint(_train(data, tmp_path, cfg, FAST.model_copy(update={"epochs": 1})).model_path)
    rows = data["eval"].assign(day=data["eval"]["day"].map(lambda d: d + dt.timedelta(0)))
    np.testing.assert_allclose(
        score(bundle, rows, history), score(bundle, data["eval"], data["history"]), rtol=1e-6
    )


def test_early_stopping_follows_patience(trained):
    best = max(trained.holdout_metric)
    if (
        len(trained.holdout_metric) < FAST.epochs
    ):  # stopped early: the last patience + 1 epochs did not improve
        assert all(m <= best for m in trained.holdout_metric[-(FAST.patience + 1) :])  # ties do not improve
        assert len(trained.holdout_metric) == trained.best_epoch + FAST.patience + 1


def _with_last_day_newcomers(data: dict) -> dict:
    """A user and an item seen only on the last training day."""
    last = data["train"]["day"].max()
    extra = data["train"][data["train"]["day"] == last].head(4).assign(user_id=777, item_id=4242)
    return {**data, "train": pd.concat([data["train"], extra], ignore_index=True)}


def test_held_out_day_never_reaches_the_selection_model(data, tmp_path):
    """Without refit, a user and an item seen only on the last training day stay out of the vocabularies."""
    last = data["train"]["day"].max()
    result = _train(_with_last_day_newcomers(data), tmp_path, train_cfg=FAST.model_copy(update={"epochs": 1}))
    features = load_checkpoint(result.model_path).features
    assert 777 not in features.users_.ids_ and 4242 not in features.items_.ids_
    assert set(features.users_.ids_) == set(data["train"][data["train"]["day"] < last]["user_id"])
    assert not result.refit and result.refit_loss == [] and result.n_refit == 0


def test_refit_trains_on_every_day_for_the_chosen_number_of_epochs(data, tmp_path):
    """Refit (the default): the feature space is fitted on all days (the held-out day's newcomers are in the
    vocabularies) and a fresh model trains exactly the epoch count early stopping chose."""
    newcomers = _with_last_day_newcomers(data)
    epochs: list[tuple[str, int]] = []
    cfg = FAST.model_copy(update={"refit": True, "epochs": 3, "patience": 3})
    result = train_model(
        small_config(), cfg, newcomers["train"], data["history"], data["users"], data["item_table"], tmp_path,
        on_epoch_end=lambda phase, epoch: epochs.append((phase, epoch)),
    )
    bundle = load_checkpoint(result.model_path)
    assert 777 in bundle.features.users_.ids_ and 4242 in bundle.features.items_.ids_
    assert set(bundle.features.users_.ids_) == set(newcomers["train"]["user_id"])
    best = int(np.argmax(result.holdout_metric)) + 1
    assert result.refit and result.best_epoch == best and len(result.holdout_metric) == 3
    assert epochs == [("select", 1), ("select", 2), ("select", 3)] + [("refit", e) for e in range(1, best + 1)]
    assert len(result.refit_loss) == best and result.n_refit == len(newcomers["train"])
    assert result.n_train + result.n_holdout == len(newcomers["train"])
    assert bundle.meta["refit"] and bundle.meta["epoch"] == best
    assert bundle.meta["metric"] == pytest.approx(result.holdout_metric[best - 1])


def test_bce_without_refit_reproduces_the_loop_before_refit(data, tmp_path):
    """refit = false keeps the sheet's results: the curves below were recorded with the training loop as it
    was before refit, the softmax objective and resuming existed (commit 378f89a). Dropout makes them
    depend on every draw from torch's global generator, so an added or missing draw shows."""
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM, dropout=0.2)
    train_cfg = TrainConfig(batch_size=64, epochs=4, learning_rate=1e-2, patience=1, device="cpu", refit=False)
    result = _train(data, tmp_path, cfg, train_cfg, seed=3)
    assert result.best_epoch == 1
    assert result.train_loss == pytest.approx([0.6624747514724731, 0.5432546138763428, 0.4604770541191101], rel=1e-5)
    assert result.holdout_metric == pytest.approx([0.8240740740740741, 0.7901234567901234, 0.824074074074074], rel=1e-5)
