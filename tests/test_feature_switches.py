"""Every ablation switch is proven: changing a feature group's inputs changes the model's output when the
group is on, and leaves it bit-identical when the group is off (issue 11.4).

One batch is encoded with every group on; each group's inputs (the tensors the towers read for it) are then
changed, and two models built from the same sizes are compared: every group on, and every group but the one
under test. The creator id embedding (``model.creator_id_embedding``) is a switch of its own inside the
``creator`` group."""

from __future__ import annotations

import pytest
import torch

from tests.test_model import ALL_ITEM, ALL_USER, small_config, synthetic
from twotower.model.feature_space import FeatureSpace
from twotower.model.two_tower import TwoTower

N_ROWS = 64


def _shift_ids(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Every index moved to another valid one of [1, n)."""
    return ids % (n - 1) + 1


def _perturb(batch: dict, keys: tuple[str, ...], dims: dict) -> dict:
    out = dict(batch)
    gen = torch.Generator().manual_seed(0)
    for key in keys:
        value = batch[key]
        if key in ("pos_hist", "neg_hist", "content_row"):  # other content-table rows
            out[key] = torch.randint(1, dims["n_content"], value.shape, generator=gen)
        elif key == "dow":
            out[key] = (value + 3) % 7
        elif key == "hour":
            out[key] = (value + 5) % 24
        elif key == "user_idx":
            out[key] = _shift_ids(value, dims["n_users"])
        elif key == "item_idx":
            out[key] = _shift_ids(value, dims["n_items"])
        elif key == "creator_idx":
            out[key] = _shift_ids(value, dims["n_creators"])
        else:  # numeric groups
            out[key] = value + 1.5
    return out


# group -> (the batch keys that carry its inputs, the config of the model with the group off)
USER_GROUPS = {
    "pos_mean_hist_emb": ("pos_hist",),
    "neg_mean_hist_emb": ("neg_hist",),
    "context": ("dow", "hour"),
    "user_base": ("user_base",),
    "user_static": ("user_static",),
    "user_id": ("user_idx",),
}
ITEM_GROUPS = {
    "content": ("content_row",),
    "item_base": ("item_base",),
    "creator": ("creator", "creator_idx"),
    "item_id": ("item_idx",),
}
CASES = [
    *((g, keys, {"user_features": tuple(f for f in ALL_USER if f != g)}) for g, keys in USER_GROUPS.items()),
    *((g, keys, {"item_features": tuple(f for f in ALL_ITEM if f != g)}) for g, keys in ITEM_GROUPS.items()),
    ("creator_id_embedding", ("creator_idx",), {"creator_id_embedding": False}),
]


@pytest.fixture(scope="module")
def encoded():
    data = synthetic()
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM)
    space = FeatureSpace(cfg).fit(data["train"], data["users"], data["item_table"])
    batch = space.transform(data["train"], data["history"], data["users"])[torch.arange(N_ROWS)]
    return batch, space.dims(), space.content_matrix(data["item_table"])


def _model(dims: dict, content: torch.Tensor, **overrides) -> TwoTower:
    torch.manual_seed(0)
    cfg = small_config(**{"user_features": ALL_USER, "item_features": ALL_ITEM, **overrides})
    return TwoTower(cfg, dims, content).eval()


def test_the_cases_cover_every_group():
    assert set(USER_GROUPS) == set(ALL_USER) and set(ITEM_GROUPS) == set(ALL_ITEM)


@pytest.mark.parametrize(("group", "keys", "off"), CASES, ids=[c[0] for c in CASES])
@torch.no_grad()
def test_a_group_changes_the_output_only_when_it_is_on(encoded, group, keys, off):
    batch, dims, content = encoded
    changed = _perturb(batch, keys, dims)
    assert all(not torch.equal(batch[k], changed[k]) for k in keys)
    on = _model(dims, content)
    diff = (on(batch) - on(changed)).abs()
    assert diff.max() > 1e-4, f"{group} is on but its inputs do not reach the output"
    model_off = _model(dims, content, **off)
    assert torch.equal(model_off(batch), model_off(changed)), f"{group} is off but its inputs still matter"
    # and each tower's embedding separately (the retrieval index uses them, not the logits)
    assert torch.equal(model_off.user_embeddings(batch), model_off.user_embeddings(changed))
    assert torch.equal(model_off.item_embeddings(batch), model_off.item_embeddings(changed))
