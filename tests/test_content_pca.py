"""PCA: fitted on training-window items only, the errors, and the whole item-table pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app
from twotower.config import parse_config
from twotower.content.item_table import build_item_table, read_item_table
from twotower.content.pca import ContentPCA

EXPERIMENT = {"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-01", "val_date": "2022-05-02"}


def make_config(tmp_path: Path, content: dict):
    raw = {"name": "t", "seed": 3, "data": {"path": str(tmp_path)}, "experiments": [EXPERIMENT]}
    raw["content"] = {"cache_dir": str(tmp_path / "cache"), **content}
    return parse_config(raw)


def precomputed_setup(tmp_path: Path, n: int = 40, dim: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.arange(100, 100 + n)
    vectors = rng.normal(size=(n, dim)) * np.linspace(3, 0.1, dim)
    pd.DataFrame({"item_id": ids, "vector": list(vectors)}).to_parquet(tmp_path / "v.parquet")
    return pd.DataFrame({"item_id": ids}), vectors


def test_pca_matches_numpy_svd() -> None:
    x = np.random.default_rng(1).normal(size=(50, 6)) * [5, 3, 2, 1, 0.5, 0.1]
    pca = ContentPCA(3).fit(x)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components_), np.abs(vt[:3]), atol=1e-8)
    np.testing.assert_allclose(pca.explained_variance_ratio_, (s**2 / (s**2).sum())[:3], atol=1e-10)
    out = pca.transform(x, np.array([True] * 49 + [False]))
    assert out.shape == (50, 3) and out.dtype == np.float32 and not out[-1].any()


def test_pca_errors() -> None:
    with pytest.raises(ValueError, match="at least 128 dimensions; the encoder gives 64"):
        ContentPCA(128).fit(np.ones((500, 64)))
    with pytest.raises(ValueError, match="at least 128 training-window items with content; there are 100"):
        ContentPCA(128).fit(np.ones((100, 300)))


def test_validation_only_item_does_not_change_the_fit(tmp_path: Path) -> None:
    items, vectors = precomputed_setup(tmp_path)
    config = make_config(
        tmp_path,
        {"encoder": "precomputed", "pca_components": 4, "precomputed": {"path": str(tmp_path / "v.parquet")}},
    )
    train_ids = items["item_id"].to_numpy()[:30]
    base, report = build_item_table(config, items.iloc[:30], train_ids, progress=False)
    # the same training items plus validation-only items with extreme vectors
    full, _ = build_item_table(config, items, train_ids, progress=False)
    np.testing.assert_allclose(np.stack(full["vector"][:30]), np.stack(base["vector"]), atol=1e-6)
    # ... whereas fitting on them too changes the projection
    everything, _ = build_item_table(config, items, items["item_id"].to_numpy(), progress=False)
    assert not np.allclose(np.stack(everything["vector"][:30]), np.stack(base["vector"]), atol=1e-3)
    assert report["pca_fit_items"] == 30 and report["input_dim"] == 12
    assert 0 < report["explained_variance_ratio_total"] <= 1


def test_item_table_report_and_items_without_content(tmp_path: Path) -> None:
    items, _ = precomputed_setup(tmp_path)
    items = pd.concat([items, pd.DataFrame({"item_id": [999]})], ignore_index=True)
    config = make_config(
        tmp_path,
        {"encoder": "precomputed", "pca_components": 5, "precomputed": {"path": str(tmp_path / "v.parquet")}},
    )
    table, report = build_item_table(config, items, items["item_id"].to_numpy(), progress=False)
    assert table["item_id"].dtype == np.int64 and table["item_id"].tolist() == items["item_id"].tolist()
    assert all(v.dtype == np.float32 and v.shape == (5,) for v in table["vector"])
    assert not table["vector"].iloc[-1].any()  # no vector -> origin
    assert report["items_without_content"] == 1 and report["items_without_content_examples"] == [999]
    assert report["pca_fit_items"] == 40 and "note" not in report


def test_metadata_report_says_stand_in_and_cache_hits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "creator_id": rng.integers(0, 5, n),
            "duration_ms": rng.uniform(2_000, 100_000, n),
            "tags": [",".join(map(str, rng.choice(30, 2, replace=False))) for _ in range(n)],
            "upload_type": rng.choice(["Web", "Kmovie"], n),
        }
    )
    config = make_config(tmp_path, {"encoder": "metadata", "pca_components": 8})
    table, report = build_item_table(config, items, np.arange(40), progress=False)
    assert "stand-in for BLIP" in report["note"]
    assert (report["cache_hits"], report["cache_misses"]) == (0, n)
    again, report2 = build_item_table(config, items, np.arange(40), progress=False)
    assert (report2["cache_hits"], report2["cache_misses"]) == (n, 0)
    np.testing.assert_array_equal(np.stack(table["vector"]), np.stack(again["vector"]))


def test_embed_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items, _ = precomputed_setup(tmp_path)
    items["in_train"] = np.arange(len(items)) < 30
    (tmp_path / "t.toml").write_text(
        'name = "t"\n[data]\npath = "."\n[content]\nencoder = "precomputed"\npca_components = 4\n'
        'cache_dir = "cache"\n[content.precomputed]\npath = "v.parquet"\n[[experiments]]\nid = 1\n'
        "train_start = 2022-04-25\ntrain_end = 2022-05-01\nval_date = 2022-05-02\n"
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["embed", "t.toml", "-e", "1"])
    assert result.exit_code == 2 and "run `twotower prepare" in result.output
    prepared = tmp_path / "prepared" / "t" / "experiment_1"
    prepared.mkdir(parents=True)
    items.to_parquet(prepared / "items.parquet")
    assert runner.invoke(app, ["embed", "t.toml", "-e", "1"]).exit_code == 0
    ids, vectors = read_item_table(prepared / "item_embeddings.parquet")
    assert (
        ids.tolist() == items["item_id"].tolist() and vectors.shape == (40, 4) and vectors.dtype == np.float32
    )
    report = json.loads((prepared / "item_embeddings.json").read_text())
    assert report["pca_fit_items"] == 30 and report["experiment"] == 1
    assert runner.invoke(app, ["embed", "t.toml", "--out", str(tmp_path / "elsewhere")]).exit_code == 0
    # an earlier item table is never replaced silently
    again = runner.invoke(app, ["embed", "t.toml", "-e", "1"])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    assert runner.invoke(app, ["embed", "t.toml", "-e", "1", "--overwrite"]).exit_code == 0
    assert (tmp_path / "elsewhere" / "item_embeddings.parquet").is_file()
