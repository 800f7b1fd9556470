"""The catalog and the catalog-retrieval sets on the hand-built log (docs/retrieval.md); expected values by hand.

The log of tinylog.py plus: item 16 (uploaded on the validation day 05-04), item 17 (uploaded 06-01, after
the experiment), item 18 (no upload date, first played 05-02); a positive play of 16 by user 5 and of 17
and 18 by a new user 7 on 05-04.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.tinylog import EVENTS, ITEMS, events_frame, tiny_config_dict
from twotower.config import parse_config
from twotower.data.prepare import prepare_experiment
from twotower.data.schema import CREATOR_BASE, ITEM_BASE

EXTRA_EVENTS = [
    (4, 18, "2022-05-02", "12:00", 1.0, 10, 0, 0),
    (5, 16, "2022-05-04", "11:00", 10.0, 10, 0, 0),
    (7, 17, "2022-05-04", "12:00", 10.0, 10, 0, 0),
    (7, 18, "2022-05-04", "13:00", 10.0, 10, 0, 0),
]
EXTRA_ITEMS = pd.DataFrame(
    {
        "item_id": [16, 17, 18],
        "creator_id": [300, 400, 400],
        "duration_seconds": [10.0] * 3,
        "upload_date": ["2022-05-04", "2022-06-01", None],
    }
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    (root / "data").mkdir()
    events, items = root / "data" / "events.parquet", root / "data" / "items.parquet"
    events_frame(EVENTS + EXTRA_EVENTS).to_parquet(events, index=False)
    pd.concat([ITEMS, EXTRA_ITEMS], ignore_index=True).to_parquet(items, index=False)
    cfg = parse_config(tiny_config_dict(events, items))
    result = prepare_experiment(cfg, cfg.experiments[0], root / "out", progress=False)
    names = ("catalog", "retrieval_users", "retrieval_targets", "seen", "items", "popularity", "eval", "history")
    return {"funnel": result.funnel, **{n: pd.read_parquet(root / "out" / f"{n}.parquet") for n in names}}


def test_catalog_holds_the_items_that_exist_at_the_start_of_each_day(prepared):
    catalog = prepared["catalog"]
    by_day = catalog.groupby(catalog["day"].astype(str))["item_id"].apply(sorted).to_dict()
    base = [10, 11, 12, 13, 14, 15]  # uploaded 2022-04-01
    assert by_day == {
        "2022-05-01": base,
        "2022-05-02": base + [18],  # no upload date: from its first play on 05-02
        "2022-05-03": base + [18],
        "2022-05-04": base + [16, 18],  # uploaded that day; 17 is uploaded after the experiment
    }
    assert list(catalog.columns) == ["item_id", "creator_id", *ITEM_BASE[:6], *CREATOR_BASE, *ITEM_BASE[6:], "day"]
    assert json.loads(json.dumps(prepared["funnel"].notes["catalog items per day"])) == {
        "2022-05-01": 6, "2022-05-02": 7, "2022-05-03": 7, "2022-05-04": 8
    }


def test_catalog_features_equal_the_evaluation_rows_features(prepared):
    """Same point-in-time rules: (item 12, 05-04) in the catalog and in eval.parquet carry equal values."""
    catalog = prepared["catalog"]
    row = catalog[(catalog.item_id == 12) & (catalog.day.astype(str) == "2022-05-04")].iloc[0]
    ev = prepared["eval"]
    expected = ev[(ev.user_id == 1) & (ev.item_id == 12)].iloc[0]
    for column in (*ITEM_BASE, *CREATOR_BASE):
        assert row[column] == pytest.approx(expected[column]), column
    # item 16 was never played before 05-04: no past, the prior rate, age 0
    new = catalog[(catalog.item_id == 16)].iloc[0]
    assert (new.item_has_past, new.item_plays, new.item_age_days) == (0, 0.0, 0.0)


def test_retrieval_sets_of_the_validation_day(prepared):
    users = prepared["retrieval_users"].set_index("user_id")
    assert sorted(users.index) == [1, 2, 5, 7]  # users with a positive play on 05-04
    assert users.cold.to_dict() == {1: False, 2: False, 5: False, 7: True}  # 7 never played before
    assert (users.loc[7, "hour"], users.loc[7, "dow"]) == (12, 2)  # first play 12:00 on a Wednesday
    targets = prepared["retrieval_targets"]
    got = {(r.user_id, r.item_id): (r.in_catalog, r.seen) for r in targets.itertuples()}
    assert got == {
        (1, 12): (True, True),  # user 1 played 12 on 05-01
        (2, 10): (True, True),
        (5, 10): (True, True),  # played 05-03
        (5, 16): (True, False),
        (7, 17): (False, False),  # not in the catalog yet: unreachable
        (7, 18): (True, False),
    }
    seen = prepared["seen"].groupby("user_id")["item_id"].apply(sorted).to_dict()
    assert seen == {1: [10, 11, 12, 13, 14], 2: [10, 11, 12, 13, 14], 5: [10]}
    assert prepared["funnel"].notes["retrieval"] == {
        "users with a positive play": 4,
        "positive (user, item) pairs": 6,
        "targets outside the catalog (unreachable)": 1,
        "targets removed as already seen": 3,
    }
    # the retrieval users' histories as of 05-04 are in history.parquet
    history = prepared["history"]
    day = history[history.day.astype(str) == "2022-05-04"]
    assert {1, 2, 5, 7} <= set(day.user_id)


def test_items_cover_the_whole_catalog_and_popularity_counts_positives(prepared):
    assert sorted(prepared["items"].item_id) == list(range(10, 19))
    popularity = prepared["popularity"].set_index("item_id")
    # item 10 in the training window 05-01..05-03: 13 plays, of which 6 watched past 90%
    assert (popularity.loc[10, "plays"], popularity.loc[10, "positives"]) == (13, 6)
