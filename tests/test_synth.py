"""The planted-signal generator, its files, config and command; the ablation variants; the history probe by hand."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.ablation import VARIANTS, identity_proxies, variant_config
from twotower.cli import app
from twotower.config import ModelConfig, load_config, parse_config
from twotower.probe import history_probe
from twotower.synth import SynthSpec, config_dict, generate, read_truth, read_vectors, write_planted

WEAK = "item base numerics (weak)"
SMALL = SynthSpec(users=300, items=120, topics=4, days=4, plays_per_user_day=5, seed=3)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _matched(log) -> np.ndarray:
    return log.user_topic[log.events["user_id"]] == log.item_topic[log.events["item_id"]]


def _completed(events: pd.DataFrame) -> np.ndarray:
    return (events["watch_seconds"] / events["duration_seconds"] > 0.9).to_numpy()


def test_same_spec_same_log_other_seed_other_log():
    a, b = generate(SMALL), generate(SMALL)
    pd.testing.assert_frame_equal(a.events, b.events)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    c = generate(SynthSpec(**{**SMALL.__dict__, "seed": 4}))
    assert not a.events.equals(c.events) and not np.array_equal(a.centres, c.centres)


def test_events_layout_and_label_separation():
    log = generate(SMALL)
    ev = log.events
    assert list(ev.columns) == [
        "user_id",
        "item_id",
        "timestamp",
        "watch_seconds",
        "duration_seconds",
        "like",
        "share",
    ]
    start = pd.Timestamp("2024-03-01", tz="UTC")
    assert ev["timestamp"].min() >= start and ev["timestamp"].max() < start + pd.Timedelta(days=4)
    assert ev["timestamp"].is_monotonic_increasing
    assert ev["user_id"].between(0, 299).all() and ev["item_id"].between(0, 119).all()
    assert ev["duration_seconds"].between(3.0, 600.0).all()
    # the item's duration is the play's duration
    assert (log.item_duration_s[ev["item_id"]] == ev["duration_seconds"].to_numpy()).all()
    # completed plays watch >= 0.92 - rounding, others <= 0.88 + rounding: the 0.9 label is unambiguous
    fraction = ev["watch_seconds"] / ev["duration_seconds"]
    assert not fraction.between(0.885, 0.915).any()
    assert set(ev["like"].unique()) <= {0, 1} and set(ev["share"].unique()) <= {0, 1}
    # about plays_per_user_day * users * days plays (activity has mean 1): 300 * 4 * 5 = 6000
    assert 5000 < len(ev) < 7000


def test_completion_rate_of_matched_plays_is_the_planted_probability():
    # No noise, no item effects: a matched play has cos = 1, so P(completed) = sigmoid(-2 + 4) = 0.8808.
    spec = SynthSpec(
        users=2000,
        items=500,
        topics=5,
        days=3,
        plays_per_user_day=10,
        item_noise=0.0,
        user_noise=0.0,
        quality_sd=0.0,
        duration_effect=0.0,
        base_logit=-2.0,
        preference_effect=4.0,
        exposure_bias=0.5,
        seed=1,
    )
    log = generate(spec)
    matched, done = _matched(log), _completed(log.events)
    assert matched.sum() > 30_000  # binomial sd of the rate < 0.002
    assert done[matched].mean() == pytest.approx(_sigmoid(2.0), abs=0.01)
    # unmatched: cos of two random unit centres, so the mean of sigmoid(-2 + 4 cos) over those plays
    cos = (log.centres @ log.centres.T)[
        log.user_topic[log.events["user_id"]], log.item_topic[log.events["item_id"]]
    ]
    expected = np.mean(1.0 / (1.0 + np.exp(-(-2.0 + 4.0 * cos[~matched]))))
    assert done[~matched].mean() == pytest.approx(expected, abs=0.01)


def test_short_videos_are_completed_more_often():
    spec = SynthSpec(
        users=2000,
        items=400,
        topics=4,
        days=3,
        plays_per_user_day=10,
        preference_effect=0.0,
        quality_sd=0.0,
        base_logit=0.0,
        duration_effect=1.0,
        seed=2,
    )
    log = generate(spec)
    z = (np.log(log.events["duration_seconds"]) - np.log(20.0)) / 0.9
    done = _completed(log.events)
    assert done.mean() == pytest.approx(np.mean(1.0 / (1.0 + np.exp(z))), abs=0.01)
    assert done[z < -0.5].mean() > done[z > 0.5].mean() + 0.2


def test_exposure_bias_share_of_plays_in_the_preferred_topic():
    # Uniform popularity: a play is in the user's topic with probability b + (1 - b) * n_topic / n_items.
    spec = SynthSpec(
        users=2000,
        items=300,
        topics=6,
        days=3,
        plays_per_user_day=10,
        exposure_bias=0.3,
        popularity_skew=0.0,
        seed=5,
    )
    log = generate(spec)
    share_of_topic = np.bincount(log.item_topic, minlength=6) / 300
    expected = np.mean(0.3 + 0.7 * share_of_topic[log.user_topic[log.events["user_id"]]])
    assert _matched(log).mean() == pytest.approx(expected, abs=0.01)


def test_creators_mixed_by_default_and_single_topic_on_request():
    mixed = generate(SynthSpec(users=10, items=1000, topics=10, days=3, seed=0))
    per_creator = pd.Series(mixed.item_topic).groupby(mixed.item_creator).nunique()
    assert per_creator.max() > 1 and per_creator.mean() > 4  # 100 creators, ~10 items each, 10 topics
    pure = generate(SynthSpec(users=10, items=1000, topics=10, days=3, creator_topic_share=1.0, seed=0))
    assert pd.Series(pure.item_topic).groupby(pure.item_creator).nunique().max() == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("users", 0, "SynthSpec.users must be > 0"),
        ("days", 2, "SynthSpec.days must be >= 3"),
        ("exposure_bias", 1.5, "SynthSpec.exposure_bias must be in [0, 1]"),
        ("item_noise", -1.0, "SynthSpec.item_noise"),
    ],
)
def test_bad_spec_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SynthSpec(**{field: value})


def test_files_truth_and_config(tmp_path):
    log = generate(SMALL)
    paths = write_planted(log, tmp_path)
    for name in ("events", "items", "users", "embeddings", "truth", "truth_users", "truth_items"):
        assert paths[name].is_file(), name
    items = pd.read_parquet(paths["items"])
    assert items.columns.tolist() == ["item_id", "creator_id", "duration_seconds", "upload_date"]
    ids, vectors = read_vectors(tmp_path)
    assert ids.tolist() == list(range(120)) and vectors.shape == (120, 32)
    np.testing.assert_array_equal(vectors, log.item_vectors)
    truth = read_truth(tmp_path)
    np.testing.assert_allclose(truth.centres, log.centres, atol=1e-6)
    assert (truth.user_topic.to_numpy() == log.user_topic).all() and (
        truth.item_topic.to_numpy() == log.item_topic
    ).all()
    meta = json.loads(paths["truth"].read_text())
    assert meta["plays"] == len(log.events) and meta["days"][-1] == "2024-03-04"

    cfg = parse_config(config_dict(SMALL, tmp_path))
    exp = cfg.experiments[0]
    # 4 days: 03-01 history only, 03-02 .. 03-03 training, 03-04 validation
    assert (exp.train_start, exp.train_end, exp.val_date) == (
        dt.date(2024, 3, 2),
        dt.date(2024, 3, 3),
        dt.date(2024, 3, 4),
    )
    assert cfg.content.encoder == "precomputed" and cfg.content.precomputed.dim == 32
    assert cfg.content.pca_components == 16 and cfg.data.timezone == "UTC" and cfg.history.lookback_days == 4
    with pytest.raises(ValueError, match="train_days must be in 1..3"):
        config_dict(SMALL, tmp_path, train_days=4)


def test_variants_switch_groups_and_name_the_identity_proxies(tmp_path):
    raw = config_dict(SMALL, tmp_path)
    proxies = {}
    for variant in VARIANTS:
        model = parse_config(variant_config(raw, variant)).model
        proxies[variant] = identity_proxies(model)
        has_history = {"pos_mean_hist_emb", "neg_mean_hist_emb"} <= set(model.user_features)
        assert has_history == (variant not in ("without history", "without both")), variant
        assert set(model.user_features) - {"pos_mean_hist_emb", "neg_mean_hist_emb"} == {
            "context",
            "user_base",
            "user_static",
        }
    assert proxies == {
        "content + history": ["content vector", "creator id embedding", WEAK],
        "without history": ["content vector", "creator id embedding", WEAK],
        "without content": ["creator id embedding", WEAK],
        "without both": ["creator id embedding", WEAK],
        "without content or creator": [WEAK],
    }
    assert identity_proxies(ModelConfig(item_features=("item_id",))) == ["item id embedding"]
    assert identity_proxies(ModelConfig(creator_id_embedding=False)) == ["content vector", WEAK]
    with pytest.raises(ValueError, match="unknown variant 'x'"):
        variant_config(raw, "x")


def test_synth_command(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "planted"
    result = runner.invoke(
        app,
        ["synth", str(out), "--users", "50", "--items", "40", "--topics", "3", "--days", "5", "--seed", "9"],
    )
    assert result.exit_code == 0, result.output
    cfg = load_config(out / "planted.toml")
    assert cfg.data.path == (out / "events.parquet").resolve() and cfg.seed == 9
    assert cfg.content.precomputed.path == (out / "embeddings.parquet").resolve()
    assert cfg.experiments[0].val_date == dt.date(2024, 3, 5)
    assert read_truth(out).spec["users"] == 50
    result = runner.invoke(app, ["synth", str(out)])
    assert result.exit_code == 2 and "not an empty directory" in result.output
    result = runner.invoke(app, ["synth", str(tmp_path / "other"), "--topics", "0"])
    assert result.exit_code == 2 and "SynthSpec.topics must be > 0" in result.output


def test_history_probe_by_hand():
    centres = np.array([[1.0, 0.0], [0.0, 1.0]])
    item_ids = np.array([10, 11, 12, 13])
    vectors = np.array([[1.0, 0.2], [0.9, -0.1], [0.0, 1.0], [0.2, 0.8]])
    day, other = dt.date(2024, 3, 5), dt.date(2024, 3, 4)
    history = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5],
            "day": [day, day, day, other, day],
            "pos_items": [[10, 12, 13], [10, 11], [99], [12], [11, 13]],
            "neg_items": [[11], [], [12], [], []],
        }
    )
    truth = pd.Series([1, 0, 0, 1, 1], index=[1, 2, 3, 4, 5])
    result = history_probe(history, np.array([1, 2, 3, 4, 5, 1]), day, item_ids, vectors, centres, truth)
    # positive sums: user 1 (1.2, 2.0) -> topic 1 (right); user 2 (1.9, 0.1) -> 0 (right); user 5 (1.1, 0.7)
    # -> 0 (wrong); user 3 has only an item without a vector, user 4 no snapshot on that day.
    assert (result.users, result.users_without_history) == (3, 2)
    assert result.accuracy == pytest.approx(2 / 3) and result.chance == 0.5
    # negatives: user 1 (0.9, -0.1) -> 0 (wrong), user 3 (0, 1) -> 1 (wrong)
    assert (result.negative_users, result.negative_accuracy) == (2, 0.0)
    with pytest.raises(ValueError, match="1 evaluated user"):
        history_probe(history, np.array([1, 7]), day, item_ids, vectors, centres, truth)
