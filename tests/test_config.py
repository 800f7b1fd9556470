from pathlib import Path

import pytest

from twotower.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "configs" / "kuairand_blip_history.toml"


def test_seed_config_matches_the_sheet():
    cfg = load_config(SEED_CONFIG)
    assert cfg.filters.client.min_interactions == 4
    assert cfg.filters.client.max_interactions == 2000
    assert (cfg.filters.client.min_positives, cfg.filters.client.min_negatives) == (1, 1)
    assert cfg.filters.item.min_interactions == 3
    assert cfg.label.fraction_watch_above == 0.9 and cfg.label.or_events == ()
    assert cfg.sample_weight.mode == "none"
    assert (cfg.sampling.positive, cfg.sampling.negative) == (5, 5)
    assert cfg.content.pca_components == 128
    assert cfg.data.timezone == "Asia/Shanghai"
    assert "item_id" not in cfg.model.item_features
    assert {"pos_mean_hist_emb", "neg_mean_hist_emb"} <= set(cfg.model.user_features)
    exp1, exp2 = cfg.experiments
    assert (str(exp1.train_start), str(exp1.train_end), str(exp1.val_date)) == ("2022-04-25", "2022-05-01", "2022-05-02")
    assert (str(exp2.train_start), str(exp2.train_end), str(exp2.val_date)) == ("2022-04-27", "2022-05-03", "2022-05-04")
    assert exp1.event_type == "played (p90)" and exp1.train_days == 7
    # relative data paths resolve against the config file's directory
    assert cfg.data.path == (SEED_CONFIG.parent / "../../shared/data/kuairand-pure").resolve()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


BASE = """
name = "t"
[data]
path = "data"
[[experiments]]
id = 1
train_start = 2022-04-25
train_end = 2022-05-01
val_date = 2022-05-02
"""


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, BASE + "\n[filters.client]\nmin_interaction = 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "filters.client.min_interaction" in str(err.value)
    assert str(path) in str(err.value)
    assert "unknown key" in str(err.value)


def test_wrong_type_and_missing_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'sampling.positive'"):
        load_config(_write(tmp_path, BASE + '\n[sampling]\npositive = "five"\n'))
    with pytest.raises(ConfigError, match=r"missing key 'name'"):
        load_config(_write(tmp_path, BASE.replace('name = "t"', "")))


def test_label_or_events_and_bad_dates(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + '\n[label]\nfraction_watch_above = 0.8\nor_events = ["like", "share"]\n'))
    assert cfg.label.or_events == ("like", "share")
    bad = BASE.replace("val_date = 2022-05-02", "val_date = 2022-04-30")
    with pytest.raises(ConfigError, match="val_date must come after train_end"):
        load_config(_write(tmp_path, bad))
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_config(_write(tmp_path, BASE.replace('path = "data"', 'path = "data"\ntimezone = "Mars/Olympus"')))


def test_data_override_and_missing_file(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), data_path=tmp_path / "elsewhere")
    assert cfg.data.path == (tmp_path / "elsewhere").resolve()
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_static_user_features_adapt_to_a_missing_users_table():
    """The generic adapter without data.users_path has no static user features: the default feature list
    drops user_static; asking for it explicitly is an error at load, not after prepare."""
    from twotower.config import parse_config

    base = {
        "name": "x",
        "data": {"adapter": "generic", "path": "events.parquet"},
        "experiments": [{"id": 1, "train_start": "2024-01-01", "train_end": "2024-01-02", "val_date": "2024-01-03"}],
    }
    assert "user_static" not in parse_config(base).model.user_features
    with_users = parse_config({**base, "data": {**base["data"], "users_path": "users.csv"}})
    assert "user_static" in with_users.model.user_features
    with pytest.raises(ConfigError, match="'user_static', which needs a users table: set data.users_path"):
        parse_config({**base, "model": {"user_features": ["context", "user_static"]}})


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_random_seed_outside_what_numpy_accepts_is_an_error(seed):
    with pytest.raises(ConfigError, match=r"key 'seed' in --set seed="):
        load_config(SEED_CONFIG, overrides=[f"seed={seed}"])
    assert load_config(SEED_CONFIG, overrides=[f"seed={2**32 - 1}"]).seed == 2**32 - 1
