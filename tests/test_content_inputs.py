"""Content inputs: the control-character rule of item text, and the errors raised before anything is
encoded (pca_components above the encoder's dimension; items without anything the encoder reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.cli import app
from twotower.config import BlipConfig, ConfigError, load_config, parse_config
from twotower.content.blip import BlipEncoder
from twotower.content.e5 import E5Encoder
from twotower.content.encoder import Encoder, clean_text, text_of
from twotower.content.item_table import build_item_table, check_content
from twotower.content.metadata import MetadataEncoder
from twotower.content.precomputed import vector_dim
from twotower.data.validate import DataError

EXPERIMENT = {"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-01", "val_date": "2022-05-02"}


def make_config(tmp_path: Path, content: dict):
    raw = {"name": "t", "data": {"path": str(tmp_path)}, "experiments": [EXPERIMENT]}
    return parse_config({**raw, "content": {"cache_dir": str(tmp_path / "cache"), **content}})


@pytest.fixture
def no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any encoder's encode() fails the test: the errors below must come before the expensive work."""

    def encode(self, items, progress=True):
        raise AssertionError(f"{self.name} encoded {len(items)} items before the error")

    for cls in (Encoder, E5Encoder, MetadataEncoder, BlipEncoder):
        monkeypatch.setattr(cls, "encode", encode)


# ---- control characters -------------------------------------------------------------------------


def test_control_characters_are_replaced_or_removed() -> None:
    values = pd.Series(["a\x00b", "x\ty\nz\r", "\x85c\x9fd\x7f\x1b", None, " \x00 ", "猫\u200d猫", "e\x0bf\x0cg"])
    # tab, newline, CR, VT, FF -> space; other C0/C1 controls and DEL removed; others kept; then stripped
    assert clean_text(values).tolist() == ["ab", "x y z", "cd", "", "", "猫\u200d猫", "e f g"]
    items = pd.DataFrame({"caption": ["cat\x00 video", "\x00"], "cover_text": ["c\nd", None]})
    assert text_of(items, ("caption", "cover_text")) == ["cat video\nc d", ""]


# ---- pca_components above the encoder's dimension -------------------------------------------------


def test_pca_above_e5_dimension(tmp_path: Path, no_encoding: None) -> None:
    config = make_config(tmp_path, {"encoder": "e5", "pca_components": 400})
    message = r"content.pca_components = 400 is larger than the e5 encoder's output dimension 384"
    with pytest.raises(ConfigError, match=message):
        check_content(config.content)
    items = pd.DataFrame({"item_id": [1, 2], "caption": ["a", "b"]})
    with pytest.raises(ConfigError, match=message):
        build_item_table(config, items, np.array([1, 2]), progress=False)


@pytest.mark.parametrize("layout", ["list", "fixed_size_list", "npz"])
def test_pca_above_precomputed_file_dimension(tmp_path: Path, layout: str) -> None:
    vectors = np.arange(18, dtype=np.float32).reshape(3, 6)
    if layout == "npz":
        path = tmp_path / "v.npz"
        np.savez(path, item_id=np.array([1, 2, 3]), vector=vectors)
    else:
        path = tmp_path / "v.parquet"
        column = (
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 6)
            if layout == "fixed_size_list"
            else pa.array(vectors.tolist())
        )
        pq.write_table(pa.table({"item_id": [1, 2, 3], "vector": column}), path)
    assert vector_dim(path) == 6
    config = make_config(tmp_path, {"encoder": "precomputed", "pca_components": 8, "precomputed": {"path": str(path)}})
    with pytest.raises(ConfigError, match="pca_components = 8 is larger than the precomputed encoder's output dimension 6"):
        check_content(config.content)
    # with `dim` declared, a file that disagrees is named
    config = make_config(tmp_path, {"encoder": "precomputed", "pca_components": 4, "precomputed": {"path": str(path), "dim": 5}})
    with pytest.raises(DataError, match=r"vectors have 6 dimensions, the config expects 5 \(content.precomputed.dim\)"):
        check_content(config.content)


def test_pca_above_declared_precomputed_dim_at_config_load(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'name = "c"\n[data]\npath = "."\n[content]\nencoder = "precomputed"\n'
        '[content.precomputed]\npath = "absent.parquet"\ndim = 64\n'
        "[[experiments]]\nid = 1\ntrain_start = 2022-04-25\ntrain_end = 2022-05-01\nval_date = 2022-05-02\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.toml")  # the vectors file does not even exist: caught before it is read
    message = str(caught.value)
    assert str(tmp_path / "c.toml") in message and "key 'content'" in message
    assert "pca_components = 128 is larger than precomputed.dim = 64" in message
    assert "set content.pca_components to at most 64" in message


def test_pca_above_metadata_dimension_after_fit(tmp_path: Path, no_encoding: None) -> None:
    items = pd.DataFrame({"item_id": [1, 2, 3], "tags": ["1", "2", "1"], "video_type": ["A", "A", None]})
    # columns with the defaults: tags 2 + other + missing = 4; video_type 1 + 2 = 3; upload_type and
    # music_type 2 each; creator_id and music_id 32 buckets + missing = 33 each; duration 1 + 16 bins +
    # missing = 18; aspect 1 + 3 orientations + missing = 5: 4 + 3 + 2 + 2 + 33 + 33 + 18 + 5 = 100
    config = make_config(tmp_path, {"encoder": "metadata", "pca_components": 101})
    check_content(config.content)  # unknown before the vocabulary is fitted: no error yet
    with pytest.raises(ConfigError, match="pca_components = 101 is larger than the metadata encoder's output dimension 100"):
        build_item_table(config, items, np.array([1, 2, 3]), progress=False)


# ---- items without anything the encoder reads -----------------------------------------------------


def test_e5_without_text_columns_or_with_empty_text(tmp_path: Path, no_encoding: None) -> None:
    config = make_config(tmp_path, {"encoder": "e5", "pca_components": 2})
    bare = pd.DataFrame({"item_id": [1, 2, 3], "in_train": [True, True, False]})  # no items table given
    with pytest.raises(DataError) as caught:
        build_item_table(config, bare, np.array([1, 2]), progress=False)
    assert str(caught.value) == (
        "the e5 encoder reads item text from the column(s) caption, cover_text (content.e5.fields), but the "
        "items table has none of them (it has item_id, in_train): set data.items_path to an items table with "
        "them, or choose another content.encoder"
    )
    empty = bare.assign(caption=[None, " ", "\x00"])
    with pytest.raises(DataError, match=r"content.e5.fields\), but they are empty for all 3 items"):
        build_item_table(config, empty, np.array([1, 2]), progress=False)


def test_metadata_without_any_of_its_columns(tmp_path: Path, no_encoding: None) -> None:
    config = make_config(tmp_path, {"encoder": "metadata", "pca_components": 2})
    with pytest.raises(DataError, match=r"the metadata encoder reads the items table's columns tags, video_type, "
                       r".*but it has none of them \(it has item_id\): set data.items_path"):
        build_item_table(config, pd.DataFrame({"item_id": [1, 2, 3]}), np.array([1, 2]), progress=False)


def test_blip_without_media_or_text(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": [1, 2]})
    blip = BlipEncoder(BlipConfig(checkpoint=tmp_path / "unused"))
    with pytest.raises(DataError) as caught:
        blip.check_inputs(items)
    assert str(caught.value).startswith(
        "no item has content for the blip encoder (combine = 'concat'): content.blip.media_dir is not set; "
        "and the blip encoder reads item text from the column(s) caption, cover_text, but the items table "
        "has none of them"
    )
    (tmp_path / "media").mkdir()
    image_only = BlipEncoder(BlipConfig(checkpoint=tmp_path / "unused", media_dir=tmp_path / "media", combine="image"))
    with pytest.raises(DataError, match=r"media_dir .*media has no <item_id>.mp4 / .jpg / .jpeg / .png file for any "
                       r"of the 2 items \(e.g. 1.mp4\)"):
        image_only.check_inputs(items.assign(caption=["a", "b"]))  # text does not count for 'image'
    blip.check_inputs(items.assign(caption=["a", None]))  # text is enough for 'concat'
    (tmp_path / "media" / "2.png").write_bytes(b"")
    image_only.check_inputs(items)


def test_no_training_item_with_content(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    pd.DataFrame({"item_id": [3], "vector": [[1.0, 2.0, 3.0]]}).to_parquet(path)
    config = make_config(tmp_path, {"encoder": "precomputed", "pca_components": 2, "precomputed": {"path": str(path)}})
    with pytest.raises(DataError, match=r"none of the 2 training-window items has content for the precomputed "
                       r"encoder \(1 of all 3 items have some\)"):
        build_item_table(config, pd.DataFrame({"item_id": [1, 2, 3]}), np.array([1, 2]), progress=False)


def test_run_stops_before_prepare(tmp_path: Path) -> None:
    from twotower.pipeline import run

    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items, content={"encoder": "e5", "pca_components": 500})
    with pytest.raises(ConfigError, match="larger than the e5 encoder's output dimension 384"):
        run(parse_config(raw), tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_embed_command_names_the_missing_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.toml").write_text(
        'name = "c"\n[data]\npath = "."\n[content]\nencoder = "e5"\npca_components = 2\ncache_dir = "cache"\n'
        "[[experiments]]\nid = 1\ntrain_start = 2022-04-25\ntrain_end = 2022-05-01\nval_date = 2022-05-02\n"
    )
    prepared = tmp_path / "prepared" / "c" / "experiment_1"
    prepared.mkdir(parents=True)
    pd.DataFrame({"item_id": [1, 2, 3], "in_train": [True, True, False]}).to_parquet(prepared / "items.parquet")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["embed", "c.toml"])
    assert result.exit_code == 2
    assert result.output.startswith("error: the e5 encoder reads item text from the column(s) caption, cover_text")
    assert len(result.output.strip().splitlines()) == 1 and not (prepared / "item_embeddings.parquet").exists()
