"""per_user.parquet: list hashes, per-user values that average to metrics.json, every scorer, every user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twotower.evaluate.per_user import list_hashes, played_per_user, write_per_user
from twotower.evaluate.played import evaluate_played

# user 1: items 10 (pos), 11, 12; user 2: 10, 13 (pos); user 3: only positives (left out by the metrics)
ROWS = pd.DataFrame(
    {
        "user_id": [1, 1, 1, 2, 2, 3],
        "item_id": [10, 11, 12, 10, 13, 11],
        "label": [1, 0, 0, 0, 1, 1],
        "item_pos_rate": [0.4, 0.1, 0.3, 0.4, 0.2, 0.1],
    }
)
POPULARITY = pd.DataFrame({"item_id": [10, 11, 12, 13], "plays": [5, 3, 9, 1]})


def test_list_hash_ignores_order_and_sees_items_and_labels():
    base = list_hashes(ROWS).set_index("user_id")["list_hash"]
    shuffled = list_hashes(ROWS.iloc[[5, 2, 0, 4, 1, 3]]).set_index("user_id")["list_hash"]
    assert base.to_dict() == shuffled.to_dict() and base.dtype == np.uint64
    relabelled = ROWS.assign(label=[0, 1, 0, 0, 1, 1])  # user 1: same items, another positive
    other = list_hashes(relabelled).set_index("user_id")["list_hash"]
    assert other[1] != base[1] and other[2] == base[2] and other[3] == base[3]
    fewer = list_hashes(ROWS.drop(index=2)).set_index("user_id")["list_hash"]  # user 1 without item 12
    assert fewer[1] != base[1]
    assert len(set(base)) == 3


def test_per_user_frame_matches_the_metrics_and_keeps_every_user(tmp_path):
    scores = np.array([0.9, 0.2, 0.4, 0.8, 0.3, 0.5])  # user 1: positive on top; user 2: positive below
    frame = played_per_user(ROWS, scores, POPULARITY, seed=3)
    assert list(frame.columns[:6]) == ["scorer", "user_id", "list_hash", "n", "n_pos", "status"]
    assert set(frame["scorer"]) == {"model", "random", "popularity", "item_prior"}
    model = frame[frame["scorer"] == "model"].set_index("user_id")
    assert model["status"].to_dict() == {1: "evaluated", 2: "evaluated", 3: "all positive"}
    assert model.loc[1, "auc"] == 1.0 and model.loc[2, "auc"] == 0.0  # by hand
    assert model.loc[2, "mrr"] == 0.5 and np.isnan(model.loc[3, "auc"])
    metrics = evaluate_played(ROWS, scores, POPULARITY, seed=3).metrics
    assert played_per_user(ROWS, scores, POPULARITY, seed=3, metrics=metrics).equals(frame)  # its tables, same values
    for scorer, result in metrics.items():
        evaluated = frame[(frame["scorer"] == scorer) & (frame["status"] == "evaluated")]
        for name in ("auc", "map", "mrr", "ndcg@10", "recall@all_pos"):
            assert evaluated[name].mean() == pytest.approx(result.values[name]), (scorer, name)
    path = write_per_user(tmp_path / "per_user.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_per_user_tables_already_computed_are_reused():
    scores = np.array([0.9, 0.2, 0.4, 0.8, 0.3, 0.5])
    from twotower.evaluate.metrics import ranking_metrics

    given = ranking_metrics(ROWS["user_id"], ROWS["item_id"], ROWS["label"], scores, per_user=True)
    marked = given.per_user.assign(auc=7.0)  # a table that cannot come from recomputation
    with_table = type(given)(**{**given.__dict__, "per_user": marked})
    without_table = type(given)(**{**given.__dict__, "per_user": None})
    frame = played_per_user(ROWS, scores, POPULARITY, seed=3, metrics={"model": with_table, "random": without_table})
    assert set(frame["scorer"]) == {"model", "random"}
    assert (frame.loc[frame["scorer"] == "model", "auc"] == 7.0).all()
    assert (frame.loc[frame["scorer"] == "random", "auc"] != 7.0).all()  # computed from the seeded random scores
