"""Catalog retrieval in a run: the model's lists equal scoring every catalog item with the two towers, the
baselines' lists equal their references, and retrieval.json equals the metrics recomputed from the files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.test_catalog import EXTRA_EVENTS, EXTRA_ITEMS
from tests.test_pipeline import _config
from tests.tinylog import EVENTS, ITEMS, events_frame
from twotower.checkpoint import load_checkpoint
from twotower.data.prepared import PreparedTables
from twotower.inference import score
from twotower.pipeline import run
from twotower.retrieval.catalog_eval import RetrievalSetup, item_score_topk, random_topk, retrieval_setup
from twotower.retrieval.index import exact_topk
from twotower.retrieval.metrics import catalog_metrics
from twotower.retrieval.sets import ItemSets


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The hand-built log plus test_catalog.py's plays: users 5 and 7 complete unseen catalog items on 05-04."""
    tmp_path = tmp_path_factory.mktemp("retrieval_run")
    cfg = _config(tmp_path)
    events_frame(EVENTS + EXTRA_EVENTS).to_parquet(cfg.data.path, index=False)
    pd.concat([ITEMS, EXTRA_ITEMS], ignore_index=True).to_parquet(cfg.data.items_path, index=False)
    run_dir = run(cfg, tmp_path / "runs", progress=False)
    directory = run_dir / "experiment_1"
    return directory, PreparedTables.read(directory / "prepared")


def _setup(n_items=300, n_users=50, seed=0) -> RetrievalSetup:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10_000, n_items, replace=False))
    seen = ItemSets.from_lists([rng.choice(ids, rng.integers(0, 30)) for _ in range(n_users)])
    scores = rng.integers(0, 5, n_items).astype(float)  # many ties
    users = pd.DataFrame({"user_id": np.arange(n_users)})
    return RetrievalSetup(pd.DataFrame({"item_id": ids}), users, ItemSets.empty(n_users), seen, np.zeros(n_users, bool), scores, scores, {})


def test_item_score_lists_equal_the_brute_force_reference_with_ties():
    setup = _setup()
    got = item_score_topk(setup.plays, setup, 40)
    expected, _ = exact_topk(np.ones((50, 1)), setup.catalog_ids, setup.plays.reshape(-1, 1), 40, setup.seen)
    np.testing.assert_array_equal(got, expected)


def test_random_lists_exclude_seen_items_and_are_seeded():
    setup = _setup()
    a, b, c = random_topk(setup, 60, seed=1), random_topk(setup, 60, seed=1), random_topk(setup, 60, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for row, seen in zip(a, setup.seen.to_lists(), strict=True):
        assert len(set(row)) == 60 and not set(row) & set(seen) and set(row) <= set(setup.catalog_ids)


def test_model_lists_equal_scoring_every_catalog_item_with_the_towers(tiny_run):
    directory, data = tiny_run
    setup = retrieval_setup(data)
    bundle = load_checkpoint(directory / "model.pt")
    # every (user, catalog item) pair scored directly through the model: user rows x catalog rows
    cross = setup.users.drop(columns=["day"]).merge(setup.catalog.drop(columns=["day"]), how="cross")
    cross["day"] = setup.users["day"].iloc[0]
    direct = score(bundle, cross, data.history, data.users).reshape(len(setup.users), len(setup.catalog))
    expected, _ = exact_topk(np.eye(len(setup.users)), setup.catalog_ids, direct.T, len(setup.catalog), setup.seen)
    topk = pd.read_parquet(directory / "topk.parquet")
    for row, user in enumerate(setup.users["user_id"]):
        got = topk[topk.user_id == user].sort_values("rank")
        want = expected[row][expected[row] >= 0]
        assert got["item_id"].tolist() == want.tolist()
        np.testing.assert_allclose(got["score"], np.sort(direct[row][np.isin(setup.catalog_ids, want)])[::-1], rtol=1e-5, atol=1e-5)


def test_retrieval_json_equals_metrics_recomputed_from_the_files(tiny_run):
    directory, data = tiny_run
    setup = retrieval_setup(data)
    payload = json.loads((directory / "retrieval.json").read_text())
    topk = pd.read_parquet(directory / "topk.parquet")
    lists = np.full((len(setup.users), 500), -1, dtype=np.int64)
    row = pd.Index(setup.users["user_id"]).get_indexer(topk["user_id"])
    lists[row, topk["rank"].to_numpy() - 1] = topk["item_id"].to_numpy()
    recomputed = catalog_metrics(lists, setup.targets, catalog_ids=setup.catalog_ids)
    model = payload["scorers"]["model"]["all"]
    for name in ("recall@10", "recall@100", "hit@10", "ndcg@10", "coverage@100"):
        assert model[name] == pytest.approx(recomputed.values[name]), name
    assert set(payload["scorers"]) == {"model", "random", "popularity", "positive_popularity"}
    # test_catalog.py's counts: targets (5, 16) and (7, 18) remain; (7, 17) is unreachable, three were seen
    assert payload["counts"] | {} == {
        "catalog items": 8,
        "users with a positive play": 4,
        "positive (user, item) pairs": 6,
        "targets outside the catalog (unreachable)": 1,
        "targets removed as already seen": 3,
        "targets": 2,
        "users evaluated": 2,
        "cold users evaluated": 1,
    }
    per_user = pd.read_parquet(directory / "retrieval_per_user.parquet")
    assert list(per_user.columns[:3]) == ["scorer", "user_id", "cold"]
