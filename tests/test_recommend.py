"""``twotower recommend`` and ``twotower index`` on a completed run of the hand-built log.

recommend must equal scoring every catalog item by hand with ``inference.score`` on the cross product of
the user's row and the day's catalog rows, minus the seen items, sorted by (score desc, item id); the
user's state computed from the events must equal what prepare wrote, and the worked values of serving_run.py.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.serving_run import MEAN_WATCH_S, PRIOR_RATE, VAL_DAY, history_row, serving_run, user_row
from twotower.cli import app
from twotower.data.day_state import day_state
from twotower.data.schema import USER_BASE
from twotower.inference import score
from twotower.retrieval.catalog_index import build_run_index, day_rows
from twotower.retrieval.index import CheckpointMismatchError, ItemIndex, file_sha256
from twotower.retrieval.recommend import recommend
from twotower.retrieval.run_model import open_experiment
from twotower.runs import RunError, write_status


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_experiment(serving_run(tmp_path_factory))


def by_hand(run, row: pd.DataFrame, history: pd.DataFrame, seen: set[int], day=VAL_DAY):
    """Every catalog item scored through the model on the cross product, seen items dropped, sorted by
    (-score, item id): (item ids, scores)."""
    catalog = day_rows(run.prepared("catalog"), day)
    cross = row.drop(columns=["day"]).merge(catalog.drop(columns=["day"]), how="cross").assign(day=day)
    scores = score(run.bundle, cross, history, run.prepared("users"))
    frame = pd.DataFrame({"item_id": catalog["item_id"], "score": scores})
    frame = frame[~frame["item_id"].isin(seen)].sort_values(["score", "item_id"], ascending=[False, True])
    return frame["item_id"].tolist(), frame["score"].to_numpy()


def check(result, ids, scores) -> None:
    assert result.items["item_id"].tolist() == ids
    assert result.items["rank"].tolist() == list(range(1, len(ids) + 1))
    np.testing.assert_allclose(result.items["score"], scores, rtol=1e-5, atol=1e-5)


def test_state_computed_from_the_events_equals_what_prepare_wrote(run):
    users = run.prepared("retrieval_users")
    state = day_state(run.cfg, VAL_DAY, users["user_id"].to_numpy(), with_catalog=True)
    got = state.users.set_index("user_id")
    want = users.set_index("user_id")
    for column in (*USER_BASE, "cold", "dow"):
        np.testing.assert_allclose(got[column].astype(float), want.loc[got.index, column].astype(float), err_msg=column)
    history = run.prepared("history", VAL_DAY).set_index("user_id")
    for r in state.history.itertuples():
        assert list(r.pos_items) == list(history.loc[r.user_id, "pos_items"]), r.user_id
        assert list(r.neg_items) == list(history.loc[r.user_id, "neg_items"]), r.user_id
    seen = run.prepared("seen")
    assert sorted(map(tuple, state.seen.to_numpy())) == sorted(map(tuple, seen[["user_id", "item_id"]].to_numpy()))
    catalog = day_rows(run.prepared("catalog", VAL_DAY), VAL_DAY)
    pd.testing.assert_frame_equal(state.catalog[catalog.columns], catalog, check_dtype=False)
    assert state.prior_rate == pytest.approx(PRIOR_RATE)
    watch = state.item_watch.set_index("item_id")["item_mean_watch_s"].to_dict()
    assert watch == pytest.approx(MEAN_WATCH_S)


def test_state_of_a_user_outside_the_prepared_files_equals_the_worked_values(run):
    """User 3 before 05-04: 10 (0.5 s, 05-01), 10 (9.5 s, 05-02: positive), 11 (2 s, 05-02; a duplicate
    dropped), 12 (1 s, 05-03); every play not positive is below its item's mean watch: a negative. User 99
    never played: cold."""
    state = day_state(run.cfg, VAL_DAY, [3, 99])
    want = pd.concat([user_row(3, 4, 1, (0.5 + 9.5 + 2 + 1) / 4), user_row(99, 0, 0, 0.0)], ignore_index=True)
    got = state.users.set_index("user_id")
    for column in USER_BASE:
        np.testing.assert_allclose(got[column].astype(float), want[column].astype(float), err_msg=column)
    assert got["cold"].tolist() == [False, True] and got["dow"].tolist() == [2, 2]
    history = state.history.set_index("user_id")
    assert (list(history.loc[3, "pos_items"]), list(history.loc[3, "neg_items"])) == ([10], [12, 11, 10])
    assert (list(history.loc[99, "pos_items"]), list(history.loc[99, "neg_items"])) == ([], [])
    assert sorted(state.seen.itertuples(index=False, name=None)) == [(3, 10), (3, 11), (3, 12)]


@pytest.mark.parametrize("user, seen", [(1, {10, 11, 12, 13, 14}), (5, {10}), (7, set())])
def test_recommend_a_prepared_user_equals_scoring_every_item_by_hand_and_the_runs_topk(run, user, seen):
    users = run.prepared("retrieval_users")
    row = users[users.user_id == user].reset_index(drop=True)
    history = run.prepared("history", VAL_DAY)
    ids, scores = by_hand(run, row, history[history.user_id == user], seen=seen)
    result = recommend(run, user, k=3)
    check(result, ids[:3], scores[:3])
    assert (result.state, result.excluded_seen, result.hour) == ("prepared", len(seen), int(row.hour[0]))
    assert result.cold == (user == 7)
    topk = pd.read_parquet(run.directory / "topk.parquet")  # users with a reachable target: 5 and 7
    if user in (5, 7):
        assert topk[topk.user_id == user].sort_values("rank")["item_id"].tolist() == ids


def test_recommend_a_user_computed_from_the_events_equals_scoring_by_hand(run):
    row = user_row(3, plays=4, positives=1, mean_watch_s=(0.5 + 9.5 + 2 + 1) / 4)
    ids, scores = by_hand(run, row, history_row(3, pos=[10], neg=[12, 11, 10]), seen={10, 11, 12})
    result = recommend(run, 3, k=5)
    assert (result.state, result.cold, result.excluded_seen, result.dow, result.hour) == ("computed", False, 3, 2, 0)
    check(result, ids, scores)  # 8 catalog items - 3 seen = 5
    # the item metadata: duration, training plays (item 13: 2 plays on 05-01), creator
    first = result.items.set_index("item_id")
    assert first.loc[13, "training_plays"] == 2 and first.loc[13, "creator_id"] == 200
    assert first.loc[16, "item_duration_s"] == pytest.approx(10.0)
    # seen items are kept with --include-seen
    every = recommend(run, 3, k=8, include_seen=True, hour=9)
    ids_all, scores_all = by_hand(run, row.assign(hour=9), history_row(3, pos=[10], neg=[12, 11, 10]), seen=set())
    check(every, ids_all, scores_all)
    assert every.excluded_seen == 0 and every.hour == 9


def test_recommend_a_user_with_no_history_serves_them_cold(run):
    row = user_row(99, plays=0, positives=0, mean_watch_s=0.0)
    ids, scores = by_hand(run, row, history_row(99, [], []), seen=set())
    result = recommend(run, 99, k=8)
    assert (result.state, result.cold, result.excluded_seen) == ("computed", True, 0)
    check(result, ids, scores)
    assert result.as_dict()["cold"] is True and len(result.as_dict()["items"]) == 8


def test_recommend_on_another_day_reads_only_the_days_before_it(run):
    """As of 05-03 (a training day) user 3 has played 10 (05-01, 05-02) and 11 (05-02): the state and the
    prepared catalog of 05-03; 05-03's own play of 12 is not seen yet."""
    day = dt.date(2022, 5, 3)
    result = recommend(run, 3, k=4, day=day)
    assert result.day == day and result.dow == 1 and result.excluded_seen == 2
    state = day_state(run.cfg, day, [3])
    assert state.users["user_plays"].iloc[0] == 3.0
    assert sorted(state.seen["item_id"]) == [10, 11]
    catalog = day_rows(run.prepared("catalog"), day)
    ids, scores = by_hand(run, state.users.assign(hour=0).drop(columns="cold"), state.history, {10, 11}, day=day)
    assert len(catalog) == 7
    check(result, ids[:4], scores[:4])


def test_recommend_rejects_bad_input(run, tmp_path):
    with pytest.raises(ValueError, match="between 1 and the catalog's 8 items"):
        recommend(run, 1, k=9)
    with pytest.raises(ValueError, match="between 1"):
        recommend(run, 1, k=0)
    with pytest.raises(ValueError, match="hour"):
        recommend(run, 1, k=3, hour=24)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    write_status(unfinished, "running")
    with pytest.raises(RunError, match="not a completed run"):
        open_experiment(unfinished)


def test_index_is_saved_with_the_checkpoint_hash_and_equals_the_runs_lists(run, tmp_path):
    report = build_run_index(run, "exact", tmp_path / "exact")
    meta = json.loads((tmp_path / "exact" / "index.json").read_text())
    sha = file_sha256(run.directory / "model.pt")
    assert (meta["checkpoint_sha256"], meta["day"], meta["n"], report.n_items) == (sha, "2022-05-04", 8, 8)
    index = ItemIndex.load(tmp_path / "exact", sha)
    assert sorted(index.item_ids) == [10, 11, 12, 13, 14, 15, 16, 18]
    with pytest.raises(CheckpointMismatchError, match="another|not"):
        ItemIndex.load(tmp_path / "exact", "0" * 64)
    hnsw = build_run_index(run, "hnsw", tmp_path / "hnsw", hnsw_m=8, ef_construction=16, ef_search=16)
    assert hnsw.recall == 1.0 and hnsw.recall_queries == 4  # 8 items: the graph finds every one
    assert json.loads((tmp_path / "hnsw" / "index.json").read_text())["hnsw_recall@100"] == 1.0


def test_cli_index_and_recommend(run, tmp_path):
    cli = CliRunner()
    out = cli.invoke(app, ["index", str(run.run_dir), "--out", str(tmp_path / "ix")])
    assert out.exit_code == 0, out.output
    assert "exact index of 8 items (catalog of 2022-05-04)" in out.output
    again = cli.invoke(app, ["index", str(run.run_dir), "--out", str(tmp_path / "ix")])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = cli.invoke(app, ["index", str(run.run_dir), "--kind", "ivf"])
    assert bad.exit_code == 2 and "--kind must be one of" in bad.output
    shown = cli.invoke(app, ["recommend", str(run.run_dir), "--user", "99", "--k", "3"])
    assert shown.exit_code == 0, shown.output
    assert "cold user" in shown.output and "item_id" in shown.output
    as_json = cli.invoke(app, ["recommend", str(run.run_dir), "--user", "3", "--k", "2", "--json"])
    payload = json.loads(as_json.output)
    assert payload["k"] == 2 and payload["state"] == "computed" and payload["excluded_seen"] == 3
    assert [r["item_id"] for r in payload["items"]] == recommend(run, 3, k=2).items["item_id"].tolist()
    wrong = cli.invoke(app, ["recommend", str(run.run_dir), "--user", "3", "--k", "50"])
    assert wrong.exit_code == 2 and "between 1 and the catalog's 8 items" in wrong.output

