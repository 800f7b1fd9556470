"""``twotower embed CONFIG``: reads the prepared items table and writes the 128-d (here 4-d) item table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app
from twotower.content.item_table import read_item_table

CONFIG = """
name = "cli"
[data]
path = "."
[content]
encoder = "precomputed"
pca_components = 4
cache_dir = "cache"
[content.precomputed]
path = "vectors.parquet"
[[experiments]]
id = 1
train_start = 2022-04-25
train_end = 2022-05-01
val_date = 2022-05-02
"""


def test_embed_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(20)
    pd.DataFrame({"item_id": ids, "vector": list(rng.normal(size=(20, 6)))}).to_parquet(
        tmp_path / "vectors.parquet"
    )
    (tmp_path / "c.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["embed", "c.toml", "--experiment", "1"])
    assert result.exit_code == 2 and "twotower prepare" in result.output
    prepared = tmp_path / "prepared" / "cli" / "experiment_1"
    prepared.mkdir(parents=True)
    pd.DataFrame({"item_id": ids, "in_train": ids < 15}).to_parquet(prepared / "items.parquet")
    result = runner.invoke(app, ["embed", "c.toml", "--out", "out"])
    assert result.exit_code == 0, result.output
    item_ids, vectors = read_item_table(tmp_path / "out" / "item_embeddings.parquet")
    assert item_ids.tolist() == ids.tolist() and vectors.shape == (20, 4)
    assert (tmp_path / "out" / "item_embeddings.json").is_file()
    # what `prepare --out elsewhere` wrote is found with --prepared
    elsewhere = tmp_path / "elsewhere" / "experiment_1"
    elsewhere.mkdir(parents=True)
    pd.DataFrame({"item_id": ids[:12], "in_train": ids[:12] < 10}).to_parquet(elsewhere / "items.parquet")
    result = runner.invoke(app, ["embed", "c.toml", "--prepared", "elsewhere"])
    assert result.exit_code == 0, result.output
    item_ids, vectors = read_item_table(elsewhere / "item_embeddings.parquet")
    assert item_ids.tolist() == ids[:12].tolist() and vectors.shape == (12, 4)
