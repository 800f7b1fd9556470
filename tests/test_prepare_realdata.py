"""Leakage and filter checks on the real KuaiRand-Pure slice (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from twotower.config import load_config
from twotower.data.prepare import prepare_experiment

ROOT = Path(__file__).resolve().parents[1]
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand-pure"
LOG = "log_standard_4_25_to_5_04_pure.csv"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (KUAIRAND / LOG).exists(), reason=f"KuaiRand-Pure slice not found at {KUAIRAND}"),
]
FEATURES = [
    "item_plays", "item_pos_rate", "item_mean_fraction", "item_likes", "item_shares", "item_has_past",
    "creator_plays", "creator_pos_rate", "creator_mean_fraction", "creator_has_past",
    "user_plays", "user_pos_rate", "user_mean_watch_s", "user_has_past", "item_age_days", "item_duration_s",
]


def _prepare(data_dir: Path, out: Path, **data_overrides) -> dict[str, pd.DataFrame]:
    cfg = load_config(ROOT / "configs" / "kuairand_blip_history.toml", data_path=data_dir)
    if data_overrides:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data_overrides)})
    prepare_experiment(cfg, cfg.experiments[0], out, progress=False)
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "eval", "history", "items")}


def _altered_copy(directory: Path, from_day: str) -> Path:
    """A copy of the slice whose outcomes (watch time, likes, shares) on local days >= from_day are changed.

    The new values are a function of the play's (user, video, time), so exact duplicates stay duplicates.
    """
    log = pd.read_csv(KUAIRAND / LOG)
    local = pd.to_datetime(log.time_ms, unit="ms", utc=True).dt.tz_convert("Asia/Shanghai").dt.strftime("%Y-%m-%d")
    later = (local >= from_day).to_numpy()
    mix = (log.user_id * 7919 + log.video_id * 104729 + log.time_ms // 1000)[later]
    log.loc[later, "play_time_ms"] = mix % 200_000
    log.loc[later, "is_like"] = mix % 2
    log.loc[later, "is_forward"] = (mix // 2) % 2
    directory.mkdir()
    log.to_csv(directory / LOG, index=False)
    for other in KUAIRAND.glob("*_features_*.csv"):
        (directory / other.name).symlink_to(other)
    return directory


def _unique_index(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame.index.duplicated(keep=False)].sort_index()


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return _prepare(KUAIRAND, tmp_path_factory.mktemp("orig") / "out")


def _history_by_key(history: pd.DataFrame) -> dict:
    return {(u, str(d)[:10]): (list(p), list(n)) for u, d, p, n in history[["user_id", "day", "pos_items", "neg_items"]].itertuples(index=False)}


def test_reference_evaluation_set_with_kuairands_own_day(tmp_path):
    """The evaluation set's reference figures (1,716 users, 6,326 rows for experiment 1) use KuaiRand's `date`
    column (rounded to the hour)."""
    out = _prepare(KUAIRAND, tmp_path / "out", kuairand_day="date_column")
    ev = out["eval"]
    assert (ev.user_id.nunique(), len(ev), int((ev.groupby("user_id").size() > 5).sum())) == (1716, 6326, 262)


def test_validation_features_ignore_the_validation_day_and_later(original, tmp_path):
    altered = _prepare(_altered_copy(tmp_path / "data", "2022-05-02"), tmp_path / "out")
    key = ["user_id", "item_id"]
    a, b = _unique_index(original["eval"].set_index(key)), _unique_index(altered["eval"].set_index(key))
    common = a.index.intersection(b.index)
    assert len(common) > 1000
    pd.testing.assert_frame_equal(a.loc[common, FEATURES], b.loc[common, FEATURES])
    hist_a, hist_b = _history_by_key(original["history"]), _history_by_key(altered["history"])
    val_keys = [k for k in hist_a if k[1] == "2022-05-02" and k in hist_b]
    assert len(val_keys) > 1000 and all(hist_a[k] == hist_b[k] for k in val_keys)


def test_training_features_ignore_their_own_day_and_later(original, tmp_path):
    altered = _prepare(_altered_copy(tmp_path / "data", "2022-04-29"), tmp_path / "out")
    key = ["user_id", "item_id", "ts_ms"]
    a = _unique_index(original["train"][original["train"].day <= "2022-04-29"].set_index(key))
    b = _unique_index(altered["train"].set_index(key))
    common = a.index.intersection(b.index)
    assert len(common) > 1000
    pd.testing.assert_frame_equal(a.loc[common, FEATURES], b.loc[common, FEATURES])
    hist_a, hist_b = _history_by_key(original["history"]), _history_by_key(altered["history"])
    keys = [k for k in hist_a if k[1] <= "2022-04-29" and k in hist_b]
    assert len(keys) > 1000 and all(hist_a[k] == hist_b[k] for k in keys)


def test_history_ids_come_from_plays_before_the_day(original):
    log = pd.read_csv(KUAIRAND / LOG, usecols=["user_id", "video_id", "time_ms", "duration_ms"])
    log = log[log.duration_ms > 0]
    local = pd.to_datetime(log.time_ms, unit="ms", utc=True).dt.tz_convert("Asia/Shanghai")
    log = log.assign(day=local.dt.tz_localize(None).dt.normalize())
    first_play = log.groupby(["user_id", "video_id"]).day.min()
    hist = original["history"]
    rows = hist.explode("pos_items").dropna(subset=["pos_items"]).rename(columns={"pos_items": "video_id"})
    rows = pd.concat([rows, hist.explode("neg_items").dropna(subset=["neg_items"]).rename(columns={"neg_items": "video_id"})])
    rows = rows.assign(video_id=rows.video_id.astype("int64"))
    played = first_play.reindex(pd.MultiIndex.from_frame(rows[["user_id", "video_id"]])).to_numpy()
    assert len(rows) > 10_000
    assert (played < rows.day.to_numpy().astype(played.dtype)).all()


def test_filters_hold(original):
    log = pd.read_csv(KUAIRAND / LOG).query("duration_ms > 0").drop_duplicates()
    local = pd.to_datetime(log.time_ms, unit="ms", utc=True).dt.tz_convert("Asia/Shanghai")
    day = local.dt.strftime("%Y-%m-%d")
    window = log[(day >= "2022-04-25") & (day <= "2022-05-01")]
    window = window.assign(label=(window.play_time_ms / window.duration_ms > 0.9).astype(int))
    item_plays = window.groupby("video_id").size()
    kept = window[window.video_id.map(item_plays) >= 3]
    per_user = kept.groupby("user_id").label.agg(["size", "sum"])
    ok = per_user[(per_user["size"].between(4, 2000)) & (per_user["sum"] >= 1) & (per_user["size"] - per_user["sum"] >= 1)]
    assert set(original["train"].user_id) == set(ok.index)
    in_train = original["items"].query("in_train").item_id
    assert (item_plays.reindex(in_train) >= 3).all()
    assert set(in_train) == set(kept[kept.user_id.isin(ok.index)].video_id)
