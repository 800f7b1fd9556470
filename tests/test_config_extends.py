"""Configs that extend each other, ``--set`` overrides and the resolved ``config.toml`` of a run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.cli import app
from twotower.config import ConfigError, load_config, parse_config, write_resolved_config
from twotower.config_files import merge, parse_value
from twotower.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

PARENT = """
name = "parent"
seed = 1
[data]
path = "data"
engine = "duckdb"
[filters.client]
min_interactions = 4
max_interactions = 2000
[model]
user_features = ["pos_mean_hist_emb", "context"]
hidden = [256, 128]
[[experiments]]
id = 1
train_start = 2022-04-25
train_end = 2022-05-01
val_date = 2022-05-02
[[experiments]]
id = 2
train_start = 2022-04-27
train_end = 2022-05-03
val_date = 2022-05-04
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_rules():
    base = {"a": 1, "t": {"x": 1, "y": [1, 2], "u": {"p": 1, "q": 2}}, "rows": [{"id": 1}, {"id": 2}]}
    child = {"a": 2, "t": {"y": [3], "u": {"q": 5}}, "rows": [{"id": 9}]}
    assert merge(base, child) == {"a": 2, "t": {"x": 1, "y": [3], "u": {"p": 1, "q": 5}}, "rows": [{"id": 9}]}
    assert base["t"]["y"] == [1, 2]  # inputs untouched


def test_child_merges_sections_and_replaces_lists(tmp_path):
    _write(tmp_path / "parent.toml", PARENT)
    child = _write(
        tmp_path / "child.toml",
        'extends = "parent.toml"\nname = "child"\n[filters.client]\nmin_interactions = 7\n'
        '[model]\nuser_features = ["user_base"]\n'
        "[[experiments]]\nid = 3\ntrain_start = 2022-04-20\ntrain_end = 2022-04-21\nval_date = 2022-04-22\n",
    )
    cfg = load_config(child)
    assert cfg.name == "child" and cfg.seed == 1  # scalar overridden; untouched scalar kept
    assert (cfg.filters.client.min_interactions, cfg.filters.client.max_interactions) == (7, 2000)  # nested merge
    assert cfg.model.user_features == ("user_base",)  # list replaced, not appended
    assert cfg.model.hidden == (256, 128)
    assert [e.id for e in cfg.experiments] == [3]  # array of tables replaced
    assert cfg.experiments[0].val_date == dt.date(2022, 4, 22)


def test_chain_of_three_and_paths_per_file(tmp_path):
    _write(tmp_path / "configs" / "parent.toml", PARENT)
    _write(
        tmp_path / "configs" / "series" / "mid.toml",
        'extends = "../parent.toml"\nname = "mid"\n[content]\ncache_dir = "cache"\n[train]\nepochs = 3\n',
    )
    leaf = _write(
        tmp_path / "configs" / "series" / "deeper" / "leaf.toml",
        'extends = "../mid.toml"\nname = "leaf"\n[data]\nadapter = "generic"\nitems_path = "items.parquet"\n',
    )
    cfg = load_config(leaf)
    assert cfg.name == "leaf" and cfg.train.epochs == 3 and cfg.seed == 1
    assert cfg.data.path == (tmp_path / "configs" / "data").resolve()
    assert cfg.content.cache_dir == (tmp_path / "configs" / "series" / "cache").resolve()
    assert cfg.data.items_path == (tmp_path / "configs" / "series" / "deeper" / "items.parquet").resolve()


def test_unknown_key_names_the_file_that_writes_it(tmp_path):
    _write(tmp_path / "parent.toml", PARENT)
    mid = _write(tmp_path / "sub" / "mid.toml", 'extends = "../parent.toml"\n[filters.client]\nmin_interaction = 3\n')
    leaf = _write(tmp_path / "leaf.toml", 'extends = "sub/mid.toml"\nname = "leaf"\n')
    with pytest.raises(ConfigError) as err:
        load_config(leaf)
    message = str(err.value)
    assert f"unknown key 'filters.client.min_interaction' in {mid}" in message
    assert message.startswith(f"invalid config {leaf} (extends {mid} -> {tmp_path / 'parent.toml'})")
    # a wrong value written in the parent is the parent's
    _write(tmp_path / "parent.toml", PARENT.replace("min_interactions = 4", 'min_interactions = "four"'))
    _write(tmp_path / "sub" / "mid.toml", 'extends = "../parent.toml"\n[filters.client]\nmin_positives = 2\n')
    with pytest.raises(ConfigError, match=rf"key 'filters.client.min_interactions' in {tmp_path / 'parent.toml'}:"):
        load_config(leaf)


def test_cycle_and_missing_parent(tmp_path):
    a = _write(tmp_path / "a.toml", 'extends = "b.toml"\nname = "a"\n')
    _write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=rf"cycle: {a} -> {tmp_path / 'b.toml'} -> {a}$"):
        load_config(a)
    itself = _write(tmp_path / "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(itself)
    _write(tmp_path / "b.toml", 'extends = "gone.toml"\n')
    with pytest.raises(ConfigError) as err:
        load_config(a)
    gone = tmp_path / "gone.toml"
    assert str(err.value) == (
        f"config {tmp_path / 'b.toml'} extends {gone}, which does not exist (chain: {a} -> {tmp_path / 'b.toml'} -> {gone})"
    )
    _write(tmp_path / "b.toml", "extends = 3\n")
    with pytest.raises(ConfigError, match="'extends' must be a file name"):
        load_config(a)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("-2", -2),
        ("0.8", 0.8),
        ("1e-4", 1e-4),
        ("true", True),
        ('["context", "user_base"]', ["context", "user_base"]),
        ("spark", "spark"),
        ('"5"', "5"),
        ("some words", "some words"),
        ("2022-05-01", dt.date(2022, 5, 1)),
        ("5\nx = 1", "5\nx = 1"),
    ],
)
def test_set_value_is_parsed_as_toml(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_set_overrides(tmp_path, monkeypatch):
    path = _write(tmp_path / "c.toml", PARENT)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        path,
        overrides=[
            "train.epochs=5",
            "train.learning_rate=0.01",
            'model.user_features=["context","user_base"]',
            "data.engine=spark",
            "name=x",
            "filters.client.min_interactions=2",
            "model.item_bias=false",
            'data.adapter="generic"',
            "data.items_path=here/items.parquet",
        ],
    )
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.name) == (5, 0.01, "x")
    assert cfg.model.user_features == ("context", "user_base") and cfg.model.hidden == (256, 128)
    assert cfg.data.engine == "spark" and cfg.model.item_bias is False
    assert (cfg.filters.client.min_interactions, cfg.filters.client.max_interactions) == (2, 2000)
    assert cfg.data.items_path == (tmp_path / "here" / "items.parquet").resolve()  # relative to the working dir
    assert load_config(path, overrides=["train.epochs=2", "train.epochs=3"]).train.epochs == 3  # the last wins


def test_set_errors(tmp_path):
    path = _write(tmp_path / "c.toml", PARENT)
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch' in --set train.epoch=5 "):
        load_config(path, overrides=["train.epoch=5"])
    with pytest.raises(ConfigError, match=r"key 'train.epochs' in --set train.epochs=many: "):
        load_config(path, overrides=["train.epochs=many"])
    for bad in ("train.epochs", "=5", "train..epochs=5", "train epochs=5"):
        with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
            load_config(path, overrides=[bad])
    with pytest.raises(ConfigError, match="'extends' is read from the file"):
        load_config(path, overrides=["extends=other.toml"])


def test_cli_passes_set(tmp_path):
    path = _write(tmp_path / "c.toml", PARENT)
    runner = CliRunner()
    for command in ("prepare", "embed", "run"):
        result = runner.invoke(app, [command, str(path), "--set", "train.epochs=2", "--set", "train.epoch=5"])
        assert result.exit_code == 2, (command, result.output)
        assert "unknown key 'train.epoch' in --set train.epoch=5" in result.output


def test_resolved_config_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "series" / "weights_events.toml", overrides=["train.epochs=4"])
    assert cfg.content.cache_dir == (tmp_path / "cache" / "content").resolve()  # the default, made absolute
    written = write_resolved_config(cfg, tmp_path / "run" / "config.toml")
    assert load_config(written) == cfg
    text = written.read_text()
    assert "extends" not in text and 'name = "series_weights_events"' in text and "epochs = 4" in text
    assert "train_start = 2022-04-25\n" in text  # a TOML date, not a string
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.toml"]  # no temporary left behind
    # a config built in code: its relative default cache is the working directory's, written absolute
    events, items = write_tiny_log(tmp_path / "data")
    built = parse_config(tiny_config_dict(events, items))
    reloaded = load_config(write_resolved_config(built, tmp_path / "built.toml"))
    assert reloaded.content.cache_dir == (tmp_path / "cache" / "content").resolve()
    assert reloaded.model_copy(update={"content": built.content}) == built
    # TOML has no null: a label without a watch threshold cannot be written
    no_watch = parse_config(tiny_config_dict(events, items, label={"fraction_watch_above": None, "or_events": ["like"]}))
    with pytest.raises(ConfigError, match=r"label.fraction_watch_above is None"):
        write_resolved_config(no_watch, tmp_path / "no_watch.toml")


def test_every_config_in_the_repository_loads():
    paths = sorted(CONFIGS.rglob("*.toml"))
    configs = {p.relative_to(CONFIGS).as_posix(): load_config(p) for p in paths}
    assert len({c.name for c in configs.values()}) == len(configs) >= 12
    sheet = configs["kuairand_blip_history.toml"]

    def changed(name: str) -> dict:
        """The keys where a config differs from the seed sheet (besides its name)."""
        a, b = sheet.model_dump(), configs[name].model_dump()
        return {
            f"{section}.{key}": b[section][key]
            for section in a
            if isinstance(a[section], dict)
            for key in a[section]
            if a[section][key] != b[section][key]
        }

    hist, base_users = ("pos_mean_hist_emb", "neg_mean_hist_emb"), ("context", "user_base", "user_static")
    assert sheet.model.user_features == (*hist, *base_users)
    assert changed("series/sheet.toml") == {}
    assert changed("series/base.toml") == {
        "model.user_features": base_users, "model.item_features": ("item_id", "item_base", "creator")
    }
    assert changed("series/base_content.toml") == {
        "model.user_features": base_users, "model.item_features": ("item_id", "item_base", "creator", "content")
    }
    assert changed("series/sheet_no_creator.toml") == {"model.item_features": ("content", "item_base")}
    assert changed("series/label_like_share_08.toml") == {
        "label.fraction_watch_above": 0.8, "label.or_events": ("like", "share")
    }
    assert changed("series/weights_sqrt_watch.toml") == {"sample_weight.mode": "sqrt_watch_seconds"}
    assert configs["series/weights_sqrt_watch.toml"].sample_weight.cap == 8.0
    assert changed("series/weights_events.toml") == {"sample_weight.mode": "events"}
    assert changed("series/ratio_7_3.toml") == {"sampling.positive": 7, "sampling.negative": 3}
    assert changed("series/retrieval.toml") == {
        "model.normalize": True, "model.temperature": 0.2, "train.objective": "softmax",
        "train.batch_size": 256, "train.epochs": 20, "train.patience": 4,
    }
    assert changed("ablations/no_history.toml") == {"model.user_features": base_users}
    assert changed("ablations/no_content.toml") == {"model.item_features": ("item_base", "creator")}
    assert changed("ablations/no_history_no_content.toml") == {
        "model.user_features": base_users, "model.item_features": ("item_base", "creator")
    }
    for name, cfg in configs.items():  # only the name and the listed keys differ: experiments, seed, data too
        assert (cfg.seed, cfg.experiments, cfg.data) == (sheet.seed, sheet.experiments, sheet.data), name


def test_resolved_config_reruns_to_identical_metrics(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items)
    users = tmp_path / "data" / "users.csv"
    pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6], "register_days": [10, 200, 35, 800, 4, 90]}).to_csv(users, index=False)
    raw["data"]["users_path"] = str(users)
    raw["content"] = {"encoder": "metadata", "pca_components": 2, "cache_dir": str(tmp_path / "cache")}
    raw["train"] = {"epochs": 2, "batch_size": 2}
    raw["model"] = {"hidden": [16], "output_dim": 8}
    cfg = parse_config(raw)
    first = run(cfg, tmp_path / "runs", progress=False)
    resolved = load_config(first / "config.toml")
    assert resolved == cfg
    second = run(resolved, tmp_path / "runs", progress=False)
    assert second != first and (second / "config.toml").read_text() == (first / "config.toml").read_text()

    def metrics(run_dir: Path) -> dict:
        return json.loads((run_dir / "experiment_1" / "metrics.json").read_text())["metrics"]

    assert metrics(first)["model"]["n_rows"] == 5 and metrics(first) == metrics(second)
    scores = [pd.read_parquet(d / "experiment_1" / "scores.parquet") for d in (first, second)]
    pd.testing.assert_frame_equal(*scores)
