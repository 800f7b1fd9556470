"""The data pipeline on a hand-built log: every expected value below is worked out by hand from tinylog.py."""

from __future__ import annotations

import json

import ibis
import pandas as pd
import pytest

from tests.tinylog import tiny_config_dict, utc_timestamp, write_tiny_log
from twotower.config import parse_config
from twotower.data.clean import add_local_time, label_expression
from twotower.data.history import history_snapshots
from twotower.data.prepare import prepare_experiment
from twotower.data.sampling import row_hash_py, threshold
from twotower.data.validate import DataError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    events, items = write_tiny_log(root / "data")
    cfg = parse_config(tiny_config_dict(events, items))
    result = prepare_experiment(cfg, cfg.experiments[0], root / "out", progress=False)
    read = lambda name: pd.read_parquet(root / "out" / f"{name}.parquet")  # noqa: E731
    return {"funnel": result.funnel, "dir": root / "out", "cfg": cfg, **{n: read(n) for n in ("train", "eval", "history", "items", "popularity")}}


def test_drops_are_counted(prepared):
    drops = prepared["funnel"].drops
    assert drops["duration <= 0 or missing"] == 1
    assert drops["exact duplicate"] == 1
    assert drops["watch time < 0 or missing"] == 0


def test_funnel_counts(prepared):
    steps = {s.step.split(" (")[0].split(" 2022")[0]: s for s in prepared["funnel"].steps}
    assert steps["raw"].rows == 36
    assert steps["cleaned"].rows == 34
    # training window 05-01..05-03: 9 + 8 + 5 rows
    assert steps["training window"].rows == 22
    # item filter (>= 3 plays in the window): items 10 (13 plays) and 12 (3 plays) stay
    assert (steps["item filter"].rows, steps["item filter"].items) == (13 + 3, 2)
    # client filter 3..5 plays, >= 1 pos, >= 1 neg: users 2 and 3 stay (1 has no negative, 4 and 5 one
    # play, 6 has six plays)
    client = steps["client filter"]
    assert (client.rows, client.users, client.positive_share) == (6, 2, pytest.approx(2 / 6))
    sampled = steps["sampled 5:5"]
    kept = _kept_negatives(prepared["cfg"].seed)
    assert (sampled.rows, sampled.positive_share) == (2 + len(kept), pytest.approx(2 / (2 + len(kept))))
    assert json.loads((prepared["dir"] / "funnel.json").read_text())["drops"]["exact duplicate"] == 1


# The client-filtered training rows: 2 positives, (2, 10, 05-01) and (3, 10, 05-02), and 4 negatives; 5:5
# keeps every positive and each negative with probability 2/4, decided by the row's hash (data/sampling.py).
FILTERED_NEGATIVES = [(2, 12, "2022-05-01", "10:00"), (2, 10, "2022-05-03", "08:00"), (3, 10, "2022-05-01", "08:00"), (3, 12, "2022-05-03", "08:00")]


def _kept_negatives(seed: int) -> list[tuple[int, int]]:
    limit = threshold(2, 4)
    return [
        (u, i)
        for u, i, day, hhmm in FILTERED_NEGATIVES
        if row_hash_py(u, i, int(utc_timestamp(day, hhmm).timestamp() * 1000), seed) < limit
    ]


def test_training_examples(prepared):
    train = prepared["train"]
    kept = _kept_negatives(prepared["cfg"].seed)
    assert 0 < len(kept) < 4  # the seed of tinylog.py leaves a real choice to check
    assert set(train.user_id) == {2, 3} and set(train.item_id) <= {10, 12}
    assert sorted(zip(train[train.label == 0].user_id, train[train.label == 0].item_id, strict=True)) == sorted(kept)
    assert (train.weight == 1.0).all()
    # the two positives are (2, 10, 05-01) and (3, 10, 05-02): all positives are kept
    positives = train[train.label == 1].sort_values("user_id")
    assert positives.item_id.tolist() == [10, 10]
    assert [str(d.date()) for d in positives.day] == ["2022-05-01", "2022-05-02"]


def test_evaluation_set(prepared):
    ev = prepared["eval"].sort_values(["user_id", "item_id"])
    # user 1: 12 (a positive and a negative play: label 1), 13, 15; user 5: 10, 11. Users 2 (no negative)
    # and 3 (no positive) are left out.
    assert list(zip(ev.user_id, ev.item_id, ev.label, strict=True)) == [(1, 12, 1), (1, 13, 0), (1, 15, 0), (5, 10, 1), (5, 11, 0)]
    assert prepared["funnel"].notes["evaluation users left out"] == {"users without a negative row": 1, "users without a positive row": 1}
    # items 13, 15 and 11 are not among the filtered training rows' items {10, 12}
    assert ev.unseen_item.tolist() == [0, 1, 1, 0, 1]
    assert prepared["funnel"].notes["evaluation share of rows with items unseen in training"] == pytest.approx(0.6)
    first = ev.iloc[0]
    assert (first.hour, first.dow) == (8, 2)  # first play 08:00, 2022-05-04 is a Wednesday


def test_base_features_point_in_time(prepared):
    ev = prepared["eval"].set_index(["user_id", "item_id"])
    row = ev.loc[(5, 10)]
    # item 10 before 05-04: 14 plays, 7 positives, 1 like; global past: 25 plays, 10 positives -> prior 0.4
    assert row.item_plays == 14 and row.item_likes == 1 and row.item_shares == 0 and row.item_has_past == 1
    assert row.item_pos_rate == pytest.approx((7 + 5 * 0.4) / (14 + 5))
    # user 5 before 05-04: one play of 10 s, positive
    assert row.user_plays == 1 and row.user_mean_watch_s == pytest.approx(10.0)
    assert row.user_pos_rate == pytest.approx((1 + 5 * 0.4) / (1 + 5))
    assert row.item_age_days == 33 and row.item_duration_s == 10.0
    new = ev.loc[(1, 15)]  # item 15 has no past: the global prior and a flag, never a missing value
    assert (new.item_plays, new.item_has_past) == (0, 0)
    assert new.item_pos_rate == pytest.approx(0.4)
    # its creator 300 made item 14: two past plays, no positive
    assert new.creator_plays == 2 and new.creator_pos_rate == pytest.approx((0 + 5 * 0.4) / (2 + 5))
    assert not prepared["eval"].isna().any().any()
    assert not prepared["train"].isna().any().any()


def test_history_snapshot_for_evaluation_rows(prepared):
    hist = prepared["history"]
    hist = hist.assign(day=hist.day.astype(str).str[:10]).set_index(["user_id", "day"])
    user1 = hist.loc[(1, "2022-05-04")]
    # positives, most recent first, one entry per item: 11 (05-03), 10 (05-02 00:30), 12 (05-01)
    assert list(user1.pos_items) == [11, 10, 12]
    # negatives below the item's past mean watch: 14 (1 s < 2 s), 13 (2 < 5.75), 11 (1 < 4.45)
    assert list(user1.neg_items) == [14, 13, 11]
    user5 = hist.loc[(5, "2022-05-04")]
    assert list(user5.pos_items) == [10] and list(user5.neg_items) == []


def _snapshot(cfg_events: pd.DataFrame, needed: list[tuple[int, int]], item_watch: pd.DataFrame, max_items=100):
    table = history_snapshots(
        ibis.memtable(cfg_events),
        ibis.memtable(pd.DataFrame(needed, columns=["user_id", "day_n"])),
        ibis.memtable(item_watch),
        lookback=14,
        max_items=max_items,
    )
    return table.execute().set_index(["user_id", "day_n"])


def test_history_day_start_cut_cap_and_negative_criterion():
    day = 19000
    # 150 positives on the two days before `day`, one on `day` itself (must not appear)
    events = pd.DataFrame(
        {
            "user_id": 1,
            "item_id": list(range(150)) + [999, 500, 501],
            "ts_ms": [(day - 2) * 86_400_000 + i * 1000 for i in range(150)] + [day * 86_400_000 + 5, (day - 1) * 86_400_000, (day - 1) * 86_400_000 + 1],
            "day_n": [day - 2] * 150 + [day, day - 1, day - 1],
            "label": [1] * 151 + [0, 0],
            "watch_ms": [9000.0] * 151 + [1000.0, 5000.0],
        }
    )
    watch = pd.DataFrame({"item_id": [*range(150), 500, 501], "day_n": day, "item_mean_watch_s": [9.0] * 150 + [2.0, 2.0]})
    snap = _snapshot(events, [(1, day), (1, day - 1)], watch).sort_index()
    pos = list(snap.loc[(1, day)].pos_items)
    assert len(pos) == 100 and pos[0] == 149 and pos[-1] == 50  # most recent first, capped at 100
    assert 999 not in pos  # the snapshot day's own play is not history
    assert list(snap.loc[(1, day)].neg_items) == [500]  # 1 s < 2 s qualifies, 5 s does not
    assert list(snap.loc[(1, day - 1)].neg_items) == []  # 500 was played on day - 1: not before it


def test_local_day_and_hour_follow_the_time_zone():
    stamps = [utc_timestamp("2022-05-01", "23:45"), utc_timestamp("2022-05-02", "00:30")]
    table = ibis.memtable({"ts_ms": [int(s.timestamp() * 1000) for s in stamps]})
    out = add_local_time(table, "Asia/Shanghai").execute()
    assert [str(pd.Timestamp("1970-01-01") + pd.Timedelta(days=int(d)))[:10] for d in out.day_n] == ["2022-05-01", "2022-05-02"]
    assert out.hour.tolist() == [23, 0]
    assert stamps[1].day == 1  # ... although in UTC the second play is still on May 1st


def test_sampling_is_seeded(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    runs = []
    for i, seed in enumerate((7, 7)):
        cfg = parse_config(tiny_config_dict(events, items, seed=seed))
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / f"o{i}", progress=False)
        runs.append(pd.read_parquet(tmp_path / f"o{i}" / "train.parquet"))
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_like_or_share_label_and_event_weights(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items)
    raw["label"] = {"fraction_watch_above": 0.8, "or_events": ["like", "share"]}
    raw["sample_weight"] = {"mode": "sqrt_watch_seconds", "cap": 3.0}
    cfg = parse_config(raw)
    result = prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    positives = train[train.label == 1]
    assert len(positives) == 2 and positives.weight.tolist() == pytest.approx([3.0, 3.0])  # sqrt(10 s) > cap 3
    assert (train[train.label == 0].weight == 1.0).all()
    assert result.funnel.steps[1].positive_share == pytest.approx(13 / 34)


def test_label_criteria():
    rows = ibis.memtable({"fraction_watch": [0.85, 0.5, 0.5, 0.5, 0.95], "like": [0, 1, 0, 0, 0], "share": [0, 0, 1, 0, 0]})
    seed = parse_config(tiny_config_dict("e", "i")).label
    series = parse_config(tiny_config_dict("e", "i", label={"fraction_watch_above": 0.8, "or_events": ["like", "share"]})).label
    assert rows.select(y=label_expression(rows, seed)).execute().y.tolist() == [False, False, False, False, True]
    assert rows.select(y=label_expression(rows, series)).execute().y.tolist() == [True, True, True, False, True]


def test_refuses_to_overwrite_and_empty_window(tmp_path, prepared):
    with pytest.raises(DataError, match="already holds prepared data"):
        prepare_experiment(prepared["cfg"], prepared["cfg"].experiments[0], prepared["dir"], progress=False)
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items)
    raw["experiments"] = [{"id": 1, "train_start": "2023-01-01", "train_end": "2023-01-07", "val_date": "2023-01-08"}]
    cfg = parse_config(raw)
    with pytest.raises(DataError, match=r"no events in the .* 2022-12-18 .. 2023-01-08; the data has days 2022-04-30 .. 2022-05-04 \(5 days\)"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "empty", progress=False)


def test_local_time_matches_zoneinfo_across_daylight_saving():
    import datetime as dt
    from zoneinfo import ZoneInfo

    import numpy as np

    stamps = np.random.default_rng(0).integers(1_600_000_000_000, 1_700_000_000_000, 2000)  # 2020..2023
    out = add_local_time(ibis.memtable({"ts_ms": stamps}), "Europe/Berlin").execute()
    local = [dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(ZoneInfo("Europe/Berlin")) for ms in stamps]
    assert out.day_n.tolist() == [(t.date() - dt.date(1970, 1, 1)).days for t in local]
    assert out.hour.tolist() == [t.hour for t in local]
    assert out.dow.tolist() == [t.weekday() for t in local]
