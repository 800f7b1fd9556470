"""Two-tower model and feature space on a small synthetic fixture shaped like the prepared files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from twotower.config import ModelConfig
from twotower.data.schema import CREATOR_BASE, ITEM_BASE, USER_BASE
from twotower.model.feature_space import FeatureSpace
from twotower.model.objectives import bce_loss
from twotower.model.two_tower import TwoTower
from twotower.model.vocab import IdVocab

CONTENT_DIM = 128
DAY0 = dt.date(2022, 4, 25)


def synthetic(seed: int = 0, n_users: int = 30, n_items: int = 24, days: int = 4, per_day: int = 5) -> dict:
    """A few hundred rows in the layout of train.parquet / eval.parquet / history.parquet / users.parquet /
    items.parquet and the content item table. Labels depend mostly on a per-item quality ``q`` (like
    KuaiRand's completion rate); ``item_pos_rate`` is a noisy view of it. Days 0..days-1 are training days,
    day ``days`` is the evaluation day. Item 1000+n_items-1 has no content vector (padding path)."""
    rng = np.random.default_rng(seed)
    item_ids = 1000 + np.arange(n_items)
    quality = dict(zip(item_ids, rng.uniform(0, 1, n_items), strict=True))
    creator_of = dict(zip(item_ids, 50 + rng.integers(0, 6, n_items), strict=True))
    frames = []
    for d in range(days + 1):
        users = np.repeat(np.arange(1, n_users + 1), per_day)
        items = rng.choice(item_ids, size=len(users))
        q = np.array([quality[i] for i in items])
        frame = pd.DataFrame(
            {
                "user_id": users.astype(np.int64),
                "item_id": items.astype(np.int64),
                "creator_id": np.array([creator_of[i] for i in items], dtype=np.int64),
                "day": DAY0 + dt.timedelta(days=d),
                "dow": (DAY0.weekday() + d) % 7,
                "hour": rng.integers(0, 24, len(users)),
                "label": (rng.uniform(size=len(users)) < 0.1 + 0.8 * q).astype(np.int64),
                "weight": 1.0,
            }
        )
        for c in USER_BASE + ITEM_BASE + CREATOR_BASE:
            frame[c] = (
                rng.exponential(50.0, len(frame))
                if c.endswith(("plays", "likes", "shares", "_s", "days"))
                else rng.uniform(size=len(frame))
            )
        frame["item_pos_rate"] = np.clip(q + rng.normal(0, 0.05, len(frame)), 0, 1)
        frame.loc[frame.index[:3], "user_pos_rate"] = np.nan  # missing base features are allowed
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    train, eval_ = (
        rows[rows.day < DAY0 + dt.timedelta(days=days)],
        rows[rows.day == DAY0 + dt.timedelta(days=days)],
    )

    keys = rows[["user_id", "day"]].drop_duplicates().reset_index(drop=True)
    unknown = 999_999  # an item id that is in no content table
    pos, neg = [], []
    for k in range(len(keys)):
        n_pos, n_neg = rng.integers(0, 6), rng.integers(0, 4)
        pos.append(
            np.concatenate([rng.choice(item_ids, n_pos), [unknown] if k % 7 == 0 else []]).astype(np.int64)
        )
        neg.append(np.array([unknown] if k % 5 == 0 else rng.choice(item_ids, n_neg), dtype=np.int64))
    history = keys.assign(pos_items=pos, neg_items=neg)
    history = history.iloc[2:].reset_index(drop=True)  # some (user, day) pairs have no history row at all

    content_items = item_ids[:-1]
    item_table = pd.DataFrame(
        {
            "item_id": content_items,
            "vector": list(rng.normal(0, 3, (len(content_items), CONTENT_DIM)).astype(np.float32)),
        }
    )
    users_df = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users - 2, dtype=np.int64),  # the last users have no row
            "static_fans": rng.exponential(500, n_users - 3),
            "static_flag": rng.integers(0, 2, n_users - 3).astype(float),
            "static_name": "x",  # non-numeric: ignored
        }
    )
    items_df = pd.DataFrame({"item_id": item_ids, "creator_id": [creator_of[i] for i in item_ids]})
    return {
        "train": train.reset_index(drop=True),
        "eval": eval_.reset_index(drop=True),
        "history": history,
        "users": users_df,
        "items": items_df,
        "item_table": item_table,
        "quality": quality,
    }


ALL_USER = ("pos_mean_hist_emb", "neg_mean_hist_emb", "context", "user_base", "user_static", "user_id")
ALL_ITEM = ("content", "item_base", "creator", "item_id")


def small_config(**kw) -> ModelConfig:
    base = {
        "hidden": (32,),
        "output_dim": 8,
        "id_dim": 4,
        "context_dim": 3,
        "dropout": 0.0,
        "creator_min_count": 2,
    }
    return ModelConfig(**{**base, **kw})


def build(cfg: ModelConfig, data: dict) -> tuple[FeatureSpace, TwoTower, dict]:
    space = FeatureSpace(cfg).fit(data["train"], data["users"], data["item_table"])
    encoded = space.transform(data["train"], data["history"], data["users"])
    content = space.content_matrix(data["item_table"]) if space.content_ids_ is not None else None
    torch.manual_seed(0)
    return space, TwoTower(cfg, space.dims(), content), encoded


@pytest.fixture(scope="module")
def data() -> dict:
    return synthetic()


def test_id_vocab_has_out_of_vocabulary_zero_and_buckets_rare_ids():
    vocab = IdVocab(min_count=2).fit(np.array([5, 5, 7, 9, 9, 9]))
    assert list(vocab.transform(np.array([5, 9, 7, 123]))) == [1, 2, 0, 0]
    assert len(vocab) == 3


def test_numeric_features_are_log1p_standardised_on_training_rows(data):
    space = FeatureSpace(small_config(user_features=("user_base",), item_features=("item_base",))).fit(
        data["train"]
    )
    x = space.transform(data["train"]).columns["item_base"].numpy()
    assert x.shape == (len(data["train"]), len(ITEM_BASE))
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    plays = ITEM_BASE.index("item_plays")
    expected = np.log1p(data["train"]["item_plays"])
    np.testing.assert_allclose(
        x[:, plays], (expected - expected.mean()) / expected.std(ddof=0), rtol=1e-4, atol=1e-5
    )
    unknown_age = data["train"].head(2).assign(item_age_days=-1.0)  # the pipeline's "no upload date"
    assert (space.transform(unknown_age).columns["item_base"][:, ITEM_BASE.index("item_age_days")] == 0).all()
    user = space.transform(data["train"]).columns["user_base"].numpy()
    assert np.isfinite(user).all() and user[0, USER_BASE.index("user_pos_rate")] == 0  # NaN -> training mean


def test_history_mean_is_exact_over_known_items_and_flags_empty(data):
    cfg = small_config(user_features=("pos_mean_hist_emb", "neg_mean_hist_emb"), item_features=("content",))
    space, model, encoded = build(cfg, data)
    batch = encoded[torch.arange(len(encoded))]
    table = data["item_table"].set_index("item_id")["vector"]
    hist = data["history"].set_index(["user_id", "day"])
    scale = space.content_scale_
    checked_empty = checked_mean = 0
    for i in range(0, len(data["train"]), 7):
        row = data["train"].iloc[i]
        key = (row.user_id, row.day)
        known = [t for t in (hist.loc[key, "neg_items"] if key in hist.index else []) if t in table.index]
        mean, empty = model.user_tower.content.mean_of(batch["neg_hist"][i : i + 1])
        if known:
            np.testing.assert_allclose(
                mean[0].numpy(), np.mean([table[t] for t in known], axis=0) / scale, rtol=1e-5, atol=1e-6
            )
            assert empty.item() == 0
            checked_mean += 1
        else:
            assert empty.item() == 1 and torch.all(mean == 0)
            checked_empty += 1
    assert checked_mean and checked_empty


def test_item_without_content_vector_gets_zero_vector_and_flag(data):
    cfg = small_config(user_features=("context",), item_features=("content",))
    space, _, encoded = build(cfg, data)
    missing = data["train"]["item_id"].to_numpy() == data["items"]["item_id"].max()
    assert missing.any()
    rows = encoded.columns["content_row"].numpy()
    assert (rows[missing] == 0).all() and (rows[~missing] > 0).all()


def test_tower_and_model_shapes(data):
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM)
    _, model, encoded = build(cfg, data)
    batch = encoded[list(range(16))]
    assert model.user_tower(batch).shape == (16, 8)
    emb, bias = model.item_tower(batch)
    assert emb.shape == (16, 8) and bias.shape == (16,)
    assert model(batch).shape == (16,)
    assert model.user_embeddings(batch).shape == (16, 9) and model.item_embeddings(batch).shape == (16, 9)
    assert torch.all(model.user_embeddings(batch)[:, -1] == 1)
    assert bce_loss(model, batch).ndim == 0
    # the content table is frozen: no gradient, not a parameter
    assert all("content" not in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("user_features", [(f,) for f in ALL_USER] + [()])
@pytest.mark.parametrize("item_features", [(f,) for f in ALL_ITEM] + [()])
def test_every_feature_group_switches_on_and_off(data, user_features, item_features):
    cfg = small_config(
        user_features=user_features, item_features=item_features, normalize=bool(user_features)
    )
    _, model, encoded = build(cfg, data)
    logits = model(encoded[list(range(10))])
    assert logits.shape == (10,) and torch.isfinite(logits).all()


def test_default_config_is_the_seed_model():
    cfg = ModelConfig()
    assert {"pos_mean_hist_emb", "neg_mean_hist_emb", "context", "user_base"} <= set(cfg.user_features)
    assert "item_id" not in cfg.item_features and "content" in cfg.item_features and cfg.item_bias


def test_tiny_batch_is_overfitted(data):
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM, hidden=(64,), output_dim=16)
    _, model, encoded = build(cfg, data)
    batch = encoded[list(range(32))]
    batch["label"] = torch.as_tensor(np.random.default_rng(1).integers(0, 2, 32), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # ~25 steps suffice; the margin keeps it robust
        loss = bce_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert bce_loss(model, batch).item() < 0.01


def test_sample_weights_scale_the_loss(data):
    _, model, encoded = build(small_config(), data)
    batch = encoded[list(range(8))]
    plain = bce_loss(model, batch)
    batch["weight"] = torch.zeros(8)
    batch["weight"][0] = 1.0
    only_first = bce_loss(model, batch)
    first = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:1], batch["label"][:1])
    assert torch.isclose(only_first, first) and not torch.isclose(plain, only_first)


def test_categorical_static_columns_get_a_vocabulary_and_an_embedding(data):
    # a code, not a quantity (-124 is a sentinel, as in KuaiRand): a vocabulary and an embedding
    users = data["users"].assign(cat_segment=np.random.default_rng(5).choice(["a", "b", "-124"], len(data["users"])))
    data = {**data, "users": users}
    cfg = small_config(user_features=("user_static",), item_features=("item_base",))
    space, model, encoded = build(cfg, data)
    assert space.static_categories_.values_ == {"cat_segment": ["-124", "a", "b"]}  # the training users' codes
    assert space.dims()["user_static_categories"] == [4]
    codes = encoded.columns["user_static_cat"].numpy()[:, 0]
    segment = data["users"].set_index("user_id")["cat_segment"]
    expected = data["train"]["user_id"].map(segment).map({"-124": 1, "a": 2, "b": 3}).fillna(0)
    np.testing.assert_array_equal(codes, expected.to_numpy())  # users without a row: 0 (unknown)
    unseen = space.transform(data["train"].head(1), users=data["users"].assign(cat_segment="new"))
    assert unseen.columns["user_static_cat"].tolist() == [[0]]
    assert len(model.user_tower.static_categories) == 1
    # the numeric part ignores the code column: only static_fans and static_flag are standardised
    assert space.scalers_["user_static"].columns == ["static_fans", "static_flag"]
