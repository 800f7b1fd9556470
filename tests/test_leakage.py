"""No feature uses the example's own row or anything later: checked on the hand-built log (always runs).

The log's outcomes (watch time, likes, shares) are changed for every play on or after day d; every feature
and history of day d and before must stay exactly the same, while later days' features do move (so the
check can fail). The same check runs on the real KuaiRand slice in test_prepare_realdata.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.tinylog import EVENTS, events_frame, tiny_config_dict, write_tiny_log
from twotower.config import parse_config
from twotower.data.prepare import prepare_experiment
from twotower.data.schema import CREATOR_BASE, ITEM_BASE, USER_BASE

FEATURES = [*USER_BASE, *ITEM_BASE, *CREATOR_BASE]
LOOSE_FILTERS = {
    "client": {"min_interactions": 1, "max_interactions": 100, "min_positives": 0, "min_negatives": 0},
    "item": {"min_interactions": 1},
}


def _altered(from_day: str) -> list[tuple]:
    """The tiny log with every outcome of a play on or after ``from_day`` changed (deterministically)."""
    out = []
    for user, item, day, hhmm, watch, duration, like, share in EVENTS:
        if day >= from_day:
            mix = user * 7 + item * 3 + int(hhmm[:2])
            watch, like, share = float(mix % 11), mix % 2, (mix // 2) % 2
        out.append((user, item, day, hhmm, watch, duration, like, share))
    return out


def _prepare(tmp_path, events: list[tuple], name: str) -> dict[str, pd.DataFrame]:
    events_path, items_path = write_tiny_log(tmp_path / name / "data")
    events_frame(events).to_parquet(events_path, index=False)
    cfg = parse_config(tiny_config_dict(events_path, items_path, filters=LOOSE_FILTERS))
    prepare_experiment(cfg, cfg.experiments[0], tmp_path / name / "out", progress=False)
    names = ("train", "eval", "history", "catalog", "retrieval_users")
    return {n: pd.read_parquet(tmp_path / name / "out" / f"{n}.parquet").assign(day=lambda f: f.day.astype(str).str[:10]) for n in names}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("leak"), EVENTS, "original")


def _common(a: pd.DataFrame, b: pd.DataFrame, key: list[str], columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    a, b = a.set_index(key).sort_index(), b.set_index(key).sort_index()
    common = a.index.intersection(b.index)
    return a.loc[common, [c for c in columns if c in a]], b.loc[common, [c for c in columns if c in b]]


def _histories(history: pd.DataFrame, up_to: str) -> dict:
    rows = history[history.day <= up_to]
    return {(u, d): (list(p), list(n)) for u, d, p, n in rows[["user_id", "day", "pos_items", "neg_items"]].itertuples(index=False)}


@pytest.mark.parametrize("day", ["2022-05-02", "2022-05-04"])  # a training day and the validation day
def test_features_of_a_day_ignore_that_day_and_later(original, tmp_path, day):
    altered = _prepare(tmp_path, _altered(day), "altered")
    checked = 0
    for table, key in (("train", ["user_id", "item_id", "ts_ms"]), ("eval", ["user_id", "item_id"]), ("catalog", ["day", "item_id"]), ("retrieval_users", ["user_id"])):
        a = original[table][original[table].day <= day]
        b = altered[table][altered[table].day <= day]
        a, b = _common(a, b, key, FEATURES)
        pd.testing.assert_frame_equal(a, b, obj=f"{table} rows of {day} and before")
        checked += len(a)
    hist_a, hist_b = _histories(original["history"], day), _histories(altered["history"], day)
    keys = hist_a.keys() & hist_b.keys()
    assert all(hist_a[k] == hist_b[k] for k in keys)
    assert checked >= 20 and len(keys) >= 5


def test_the_alteration_moves_later_features(original, tmp_path):
    """The check above can fail: changed outcomes from 05-02 on move the features of 05-03 and later."""
    altered = _prepare(tmp_path, _altered("2022-05-02"), "altered")
    a, b = _common(original["catalog"][original["catalog"].day >= "2022-05-03"], altered["catalog"], ["day", "item_id"], FEATURES)
    assert len(a) and not a.equals(b)
