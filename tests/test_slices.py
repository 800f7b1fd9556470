"""Slices of the played re-ranking (evaluate/slices.py), on a hand-built set of rows with values worked by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from twotower.evaluate.slices import past_positives, played_slices, slice_table

DAY = dt.date(2022, 5, 2)

# user 1: four rows, 2 positives; user 2: three rows, 1 positive; user 3: two rows, 1 positive
ROWS = pd.DataFrame(
    {
        "user_id": [1, 1, 1, 1, 2, 2, 2, 3, 3],
        "item_id": [10, 11, 12, 13, 10, 14, 15, 11, 16],
        "label": [1, 0, 1, 0, 0, 1, 0, 1, 0],
        "unseen_item": [0, 0, 1, 1, 0, 1, 0, 0, 0],
        "item_duration_s": [5.0, 20.0, 70.0, 200.0, 5.0, 14.99, 15.0, 60.0, 180.0],
        "day": [DAY] * 9,
    }
)
MODEL = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.6, 0.5, 0.7, 0.4])
# history as of the day: user 1 has 5 past positives, user 2 has 2, user 3 has no history row at all
HISTORY = pd.DataFrame(
    {"user_id": [1, 2, 3], "day": [DAY, DAY, DAY - dt.timedelta(days=1)], "pos_items": [[1, 2, 3, 4, 5], [7, 8], [9]]}
)


def _by_group(records: list[dict], scorer: str = "model") -> dict[tuple[str, str], dict]:
    return {(r["slice"], r["group"]): r for r in records if r["scorer"] == scorer}


def test_past_positives_reads_the_rows_own_day():
    # user 3's only history row is of the day before: as of this day they have none
    assert past_positives(ROWS, HISTORY).tolist() == [5, 5, 5, 5, 2, 2, 2, 0, 0]


def test_groups_counts_and_metrics_by_hand():
    records = played_slices(ROWS, {"model": MODEL, "constant": np.zeros(9)}, HISTORY)
    model = _by_group(records)
    assert list(model) == [
        ("item", "unseen in training"), ("item", "seen in training"),
        ("duration", "<15 s"), ("duration", "15-60 s"), ("duration", "60-180 s"), ("duration", ">180 s"),
        ("past positives", "0"), ("past positives", "1-4"), ("past positives", "5+"),
    ]  # fmt: skip
    # rows per group: buckets are [lo, hi), so 15.0 s is 15-60, 60.0 is 60-180, 180.0 is >180
    assert {k: r["rows"] for k, r in model.items()} == {
        ("item", "unseen in training"): 3, ("item", "seen in training"): 6,
        ("duration", "<15 s"): 3, ("duration", "15-60 s"): 2, ("duration", "60-180 s"): 2, ("duration", ">180 s"): 2,
        ("past positives", "0"): 2, ("past positives", "1-4"): 3, ("past positives", "5+"): 4,
    }  # fmt: skip
    # unseen items: user 1 keeps (12: pos 0.2, 13: neg 0.8) -> auc 0; user 2 keeps only a positive -> out
    unseen = model[("item", "unseen in training")]
    assert (unseen["users"], unseen["rows_of_evaluated_users"], unseen["auc"]) == (1, 2, 0.0)
    # global auc over its 3 rows: positives 0.2, 0.6 vs negative 0.8 -> 0 of 2 pairs
    assert unseen["global_auc"] == 0.0
    # seen: user 1 (10: pos .9, 11: neg .1) auc 1; user 2 (10: neg .3, 15: neg .5) out; user 3 (pos .7, neg .4) 1
    seen = model[("item", "seen in training")]
    assert (seen["users"], seen["auc"]) == (2, 1.0)
    # user slices keep whole lists: 5+ is user 1: positives .9, .2 vs negatives .1, .8 -> pairs won 3 of 4
    assert model[("past positives", "5+")]["auc"] == pytest.approx(0.75)
    assert model[("past positives", "1-4")]["auc"] == 1.0  # user 2: positive .6 above .3 and .5
    assert model[("past positives", "0")]["users"] == 1
    assert model[("duration", "<15 s")]["users"] == 1  # user 1 holds 10 (pos) only; user 2 holds 10 (neg), 14 (pos)
    constant = _by_group(records, "constant")
    assert constant[("past positives", "5+")]["auc"] == 0.5  # equal scores count one half


def test_a_slice_with_one_label_has_no_metric_and_the_table_says_n_a():
    rows = ROWS.assign(item_duration_s=[5.0] * 8 + [500.0])  # row 8 (user 3's negative) alone above 180 s
    records = played_slices(rows, {"model": MODEL}, None)
    over = _by_group(records)[("duration", ">180 s")]
    assert (over["rows"], over["users"], over["auc"], over["global_auc"]) == (1, 0, None, None)
    table = slice_table({1: records}, ("model",))
    assert "| 1 | duration | >180 s | 1 | 0 | n/a (n/a) |" in table
    assert not any(r["slice"] == "past positives" for r in records)  # no history: no user slices
