"""The recommendation service through FastAPI's in-process TestClient, on a completed run of the hand-built
log: every endpoint, equality with ``recommend`` and with scoring by hand, and every bad request (4xx with a
message, never 500)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.serving_run import MEAN_WATCH_S, history_row, serving_run, user_row
from tests.test_recommend import by_hand
from twotower.retrieval.index import CheckpointMismatchError, ItemIndex, file_sha256
from twotower.retrieval.new_user import Plays, play_order, positive_labels, recent_first
from twotower.retrieval.recommend import recommend
from twotower.retrieval.run_model import open_experiment
from twotower.retrieval.serve import create_app
from twotower.retrieval.service import load_recommender, serving_index


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = open_experiment(serving_run(tmp_path_factory))
    recommender = load_recommender(run)
    return run, recommender, TestClient(create_app(recommender), raise_server_exceptions=False)


def items_of(response) -> tuple[list[int], np.ndarray]:
    body = response.json()
    return [r["item_id"] for r in body["items"]], np.array([r["score"] for r in body["items"]])


def test_health(served):
    run, _, client = served
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["catalog_items"] == 8 and body["serving_day"] == "2022-05-04"
    assert body["users_known"] == 6  # users 1..6 played in the 14 days before 05-04; 7 did not
    assert body["checkpoint_sha256"] == file_sha256(run.directory / "model.pt")
    assert body["index"]["kind"] == "exact" and body["model"] == "tiny experiment 1"


def test_get_equals_recommend_and_scoring_by_hand(served):
    run, _, client = served
    for user in (1, 3, 5):
        response = client.get("/recommend", params={"user_id": user, "k": 3})
        assert response.status_code == 200
        want = recommend(run, user, k=3)
        ids, scores = items_of(response)
        assert ids == want.items["item_id"].tolist()
        np.testing.assert_allclose(scores, want.items["score"], rtol=1e-6)
        assert response.json()["excluded_seen"] == want.excluded_seen
    # user 3 by hand (serving_run.py's worked values); the default k is the catalog size here (8 < 100)
    body = client.get("/recommend", params={"user_id": 3}).json()
    row = user_row(3, plays=4, positives=1, mean_watch_s=(0.5 + 9.5 + 2 + 1) / 4)
    ids, scores = by_hand(run, row, history_row(3, [10], [12, 11, 10]), seen={10, 11, 12})
    assert [r["item_id"] for r in body["items"]] == ids and body["k"] == 5
    assert (body["cold"], body["state"], body["context"]) == (False, "known", {"dow": 2, "hour": 0})
    first = body["items"][0]
    assert {"rank", "item_id", "score", "creator_id", "item_duration_s", "training_plays"} <= set(first)
    # another context hour: the user embedded again
    at_nine = client.get("/recommend", params={"user_id": 3, "hour": 9}).json()
    ids9, scores9 = by_hand(run, row.assign(hour=9), history_row(3, [10], [12, 11, 10]), seen={10, 11, 12})
    assert [r["item_id"] for r in at_nine["items"]] == ids9 and at_nine["context"]["hour"] == 9
    np.testing.assert_allclose([r["score"] for r in at_nine["items"]], scores9, rtol=1e-5, atol=1e-5)


def test_post_history_equals_scoring_by_hand(served):
    """Item 10 watched fully (positive), 12 for 1 s (below its mean 3.83 s: negative), 13 for 9 s (not
    positive, above its mean 5.75 s: neither); given oldest first."""
    run, _, client = served
    plays = [{"item_id": 10, "watch_fraction": 1.0}, {"item_id": 12, "watch_fraction": 0.1}, {"item_id": 13, "watch_fraction": 0.9}]
    response = client.post("/recommend", json={"history": plays, "k": 5})
    assert response.status_code == 200, response.text
    row = user_row(-1, plays=3, positives=1, mean_watch_s=(10 + 1 + 9) / 3)
    ids, scores = by_hand(run, row, history_row(-1, pos=[10], neg=[12]), seen={10, 12, 13})
    got_ids, got_scores = items_of(response)
    assert got_ids == ids
    np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-5)
    body = response.json()
    assert (body["cold"], body["state"], body["excluded_seen"], body["k"]) == (False, "request", 3, 5)
    # the same plays with timestamps, listed newest first: the same lists, the same answer
    stamped = [{**p, "timestamp": f"2022-05-0{3 - i}T10:00:00Z"} for i, p in enumerate(plays)][::-1]
    assert items_of(client.post("/recommend", json={"history": stamped, "k": 5}))[0] == ids
    # a known user id with a history: the id's static features and embedding, the given plays
    with_id = client.post("/recommend", json={"user_id": 3, "history": plays, "k": 5, "hour": 7}).json()
    row3 = user_row(3, plays=3, positives=1, mean_watch_s=20 / 3, hour=7)
    assert [r["item_id"] for r in with_id["items"]] == by_hand(run, row3, history_row(3, [10], [12]), {10, 12, 13})[0]


def test_post_empty_history_is_a_cold_user(served):
    run, _, client = served
    body = client.post("/recommend", json={"history": []}).json()
    ids, _ = by_hand(run, user_row(-1, 0, 0, 0.0), history_row(-1, [], []), seen=set())
    assert body["cold"] is True and [r["item_id"] for r in body["items"]] == ids and body["k"] == 8


def test_new_user_rules():
    plays = Plays(np.array([10, 11, 10, 12]), np.array([1.0, 0.2, 0.1, 0.5]), flags={"like": np.array([0, 0, 0, 1], bool)})
    from twotower.config import LabelConfig

    assert positive_labels(plays, LabelConfig()).tolist() == [True, False, False, False]
    assert positive_labels(plays, LabelConfig(fraction_watch_above=0.8, or_events=("like",))).tolist() == [True, False, False, True]
    order = play_order(plays)  # no timestamps: the last play is the most recent
    assert order.tolist() == [3, 2, 1, 0]
    # negatives 11 and 10 (10's latest negative play is the third), most recent first
    assert recent_first(plays.item_ids, np.array([False, True, True, False]), order, 100).tolist() == [10, 11]
    assert recent_first(plays.item_ids, np.ones(4, bool), order, 2).tolist() == [12, 10]
    stamped = Plays(plays.item_ids, plays.fractions, timestamps=np.array([5.0, 5.0, 1.0, 3.0]))
    assert play_order(stamped).tolist() == [1, 0, 3, 2]  # equal times: the larger item id first
    assert MEAN_WATCH_S[12] == pytest.approx(11.5 / 3)


@pytest.mark.parametrize(
    "method, url, payload, status, message",
    [
        ("get", "/recommend?user_id=99", None, 404, "POST /recommend"),
        ("get", "/recommend?user_id=7", None, 404, "no play in the 14 days before 2022-05-04"),
        ("get", "/recommend?user_id=1&k=0", None, 422, "k must be between 1 and the catalog's 8 items, got 0"),
        ("get", "/recommend?user_id=1&k=9", None, 422, "got 9"),
        ("get", "/recommend?user_id=abc", None, 422, "user_id"),
        ("get", "/recommend", None, 422, "user_id: Field required"),
        ("get", "/recommend?user_id=1&hour=24", None, 422, "hour"),
        ("get", "/recommend?user_id=99999999999999999999999", None, 422, "user_id"),
        ("post", "/recommend", {"history": [{"item_id": 17, "watch_fraction": 1}, {"item_id": 999, "watch_fraction": 0}]}, 422,
         "2 item id(s) of the history are not in the catalog of 2022-05-04: 17, 999"),
        ("post", "/recommend", {"history": [{"item_id": 10, "watch_fraction": "all"}]}, 422, "watch_fraction"),
        ("post", "/recommend", {"history": [{"item_id": 10, "watch_fraction": -0.5}]}, 422, "greater than or equal to 0"),
        ("post", "/recommend", {"history": [{"item_id": 10}]}, 422, "watch_fraction: Field required"),
        ("post", "/recommend", {"history": [{"item_id": 2**70, "watch_fraction": 1}]}, 422, "item_id"),
        ("post", "/recommend", {"history": [{"item_id": 10, "watch_fraction": 1, "extra": 1}]}, 422, "extra"),
        ("post", "/recommend", {"user_id": 3}, 422, "history: Field required"),
        ("post", "/recommend", {"history": "10,11"}, 422, "history"),
        ("post", "/recommend", {"history": [], "k": 100}, 422, "got 100"),
        ("post", "/recommend", {"history": [], "k": "many"}, 422, "k"),
        ("post", "/recommend", {"history": [{"item_id": 10, "watch_fraction": 1, "timestamp": "2022-05-01T00:00:00Z"},
                                             {"item_id": 11, "watch_fraction": 1}]}, 422, "1 of 2 plays have a timestamp"),
        ("post", "/recommend", [1, 2], 422, "body"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(served, method, url, payload, status, message):
    _, _, client = served
    response = client.get(url) if method == "get" else client.post(url, json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_malformed_json_and_wrong_content(served):
    _, _, client = served
    bad = client.post("/recommend", content=b'{"history": [', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    text = client.post("/recommend", content=b"history", headers={"content-type": "text/plain"})
    assert 400 <= text.status_code < 500 and text.json()["detail"]


def test_openapi_schema(served):
    _, _, client = served
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/health", "/recommend"}
    assert set(schema["paths"]["/recommend"]) == {"get", "post"}
    assert {"HistoryRequest", "Play", "RecommendResponse"} <= set(schema["components"]["schemas"])


def test_concurrent_requests_answer_as_sequential_ones(served):
    _, _, client = served
    requests = [(u, k) for u in (1, 2, 3, 4, 5, 6) for k in (1, 3, 5)] * 4
    sequential = [client.get("/recommend", params={"user_id": u, "k": k}).json() for u, k in requests]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda r: client.get("/recommend", params={"user_id": r[0], "k": r[1]}).json(), requests))
    assert parallel == sequential


def test_serving_index_refuses_another_checkpoints_index(served, tmp_path):
    run, recommender, _ = served
    recommender.index.save(tmp_path / "other", "0" * 64)
    with pytest.raises(CheckpointMismatchError, match="rebuild it with `twotower index`"):
        serving_index(run, run.prepared("catalog", run.val_day).sort_values("item_id"), "exact", tmp_path / "other")
    ItemIndex.build(np.array([10, 11]), np.ones((2, recommender.index.d), np.float32)).save(tmp_path / "few", run.checkpoint_sha256)
    with pytest.raises(ValueError, match="other items than the catalog"):
        serving_index(run, run.prepared("catalog", run.val_day), "exact", tmp_path / "few")
