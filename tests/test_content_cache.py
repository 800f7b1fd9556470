"""The content cache: keyed by a digest of each item's inputs (a changed input is a miss), and damaged
shards are named, set aside and re-encoded. A small text encoder with hand-checkable vectors counts what
it is asked to encode."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twotower.config import MetadataEncoderConfig, PrecomputedConfig
from twotower.content.cache import CorruptShardWarning, VectorCache, checksum, encode_with_cache, read_shard
from twotower.content.encoder import Encoder, ItemVectors, digests, text_of
from twotower.content.metadata import MetadataEncoder
from twotower.content.precomputed import PrecomputedEncoder


class CountingTextEncoder(Encoder):
    """caption -> [len(caption), number of 'a', number of 'o'] (float32); records every text it encodes."""

    name = "counting"

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def cache_key(self) -> str:
        return "counting-v1"

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        return digests(text_of(items, ("caption",)))

    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        texts = text_of(items, ("caption",))
        self.encoded += texts
        return ItemVectors(np.array([expected(t) for t in texts], dtype=np.float32).reshape(-1, 3), [bool(t) for t in texts])


def expected(text: str) -> list[float]:
    return [len(text), text.count("a"), text.count("o")]


def items(captions: list[str | None], ids: list[int] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"item_id": ids or list(range(1, len(captions) + 1)), "caption": captions})


def run(table: pd.DataFrame, root: Path) -> tuple[np.ndarray, dict, list[str]]:
    encoder = CountingTextEncoder()
    out, stats = encode_with_cache(encoder, table, root, progress=False)
    return out.vectors, stats, encoder.encoded


def shard_files(root: Path) -> list[Path]:
    """The shards in use (not those set aside in corrupt/)."""
    return sorted(p for p in root.rglob("shard-*.npz") if p.parent.name != "corrupt")


def test_changed_caption_is_a_miss_and_an_unchanged_one_a_hit(tmp_path: Path) -> None:
    vectors, stats, encoded = run(items(["cat", "dog", "a cow"]), tmp_path)
    assert (stats["hits"], stats["misses"]) == (0, 3) and sorted(encoded) == ["a cow", "cat", "dog"]
    np.testing.assert_array_equal(vectors, [[3, 1, 0], [3, 0, 1], [5, 1, 1]])

    vectors, stats, encoded = run(items(["cat", "dog", "a cow"]), tmp_path)
    assert (stats["hits"], stats["misses"]) == (3, 0) and encoded == []
    np.testing.assert_array_equal(vectors, [[3, 1, 0], [3, 0, 1], [5, 1, 1]])

    # item 2's caption changes: only it is encoded again, and it gets the new caption's vector
    vectors, stats, encoded = run(items(["cat", "a horse", "a cow"]), tmp_path)
    assert (stats["hits"], stats["misses"]) == (2, 1) and encoded == ["a horse"]
    np.testing.assert_array_equal(vectors, [[3, 1, 0], [7, 1, 1], [5, 1, 1]])
    assert stats["corrupt_shards"] == [] and len(shard_files(tmp_path)) == 2


def test_another_data_set_reusing_the_ids_misses(tmp_path: Path) -> None:
    run(items(["cat", "dog", "a cow"]), tmp_path)
    vectors, stats, encoded = run(items(["red", "green", "blue"]), tmp_path)  # same ids 1, 2, 3
    assert (stats["hits"], stats["misses"]) == (0, 3) and sorted(encoded) == ["blue", "green", "red"]
    np.testing.assert_array_equal(vectors, [expected("red"), expected("green"), expected("blue")])
    # both data sets stay cached side by side
    _, stats, encoded = run(items(["cat", "dog", "a cow"]), tmp_path)
    assert (stats["hits"], stats["misses"]) == (3, 0) and encoded == []


def test_equal_inputs_are_encoded_once_and_control_characters_do_not_matter(tmp_path: Path) -> None:
    vectors, stats, encoded = run(items(["a cat", "a cat", None, "a\x00 cat\x7f"], ids=[5, 9, 7, 8]), tmp_path)
    assert (stats["hits"], stats["misses"]) == (0, 4)
    assert sorted(encoded) == ["", "a cat"]  # three items read the same text "a cat"
    np.testing.assert_array_equal(vectors, [[5, 2, 0], [5, 2, 0], [0, 0, 0], [5, 2, 0]])


def corrupt(shard: Path, how: str, vectors: np.ndarray) -> None:
    data = bytearray(shard.read_bytes())
    if how == "truncated":
        shard.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        shard.write_bytes(b"")
    elif how == "flipped":  # one byte inside the stored vectors
        at = bytes(data).index(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()) + 5
        data[at] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "renamed":  # a readable shard whose arrays do not match the checksum in its name
        shard.rename(shard.with_name("shard-" + "0" * 64 + ".npz"))
    elif how == "pickled":  # object arrays must never be unpickled
        shard.unlink()
        arrays = {"digest": np.array([b"x"], dtype="S16"), "item_id": np.array([1]),
                  "vectors": np.array([[1.0]], dtype=np.float32), "has_content": np.array([object()])}
        np.savez(shard.with_name("shard-" + "1" * 64 + ".npz"), **arrays)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "unreadable: BadZipFile"),
        ("empty", "unreadable: EOFError"),
        ("flipped", "unreadable: BadZipFile: Bad CRC-32"),
        ("renamed", "checksum mismatch"),
        ("pickled", "allow_pickle=False"),
    ],
)
def test_corrupt_shard_is_named_set_aside_and_recomputed(tmp_path: Path, how: str, reason: str) -> None:
    table = items(["cat", "dog", "a cow"])
    first, _, _ = run(table, tmp_path)
    [shard] = shard_files(tmp_path)
    corrupt(shard, how, first)
    [damaged] = shard_files(tmp_path)
    with pytest.warns(CorruptShardWarning) as caught:
        vectors, stats, encoded = run(table, tmp_path)
    [warning] = [str(w.message) for w in caught]
    assert str(damaged) in warning and reason in warning and "will be encoded again" in warning
    assert "\n" not in warning
    assert (stats["hits"], stats["misses"]) == (0, 3) and sorted(encoded) == ["a cow", "cat", "dog"]
    assert stats["corrupt_shards"] == [str(damaged)]
    np.testing.assert_array_equal(vectors, first)
    assert (damaged.parent / "corrupt" / damaged.name).is_file()
    # the re-encoded shard (the same name as the original when the content is the same) reads back
    [fresh] = shard_files(tmp_path)
    assert read_shard(fresh)[1] == ""
    # the next run is clean: no warning, every item a hit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors, stats, encoded = run(table, tmp_path)
    assert (stats["hits"], stats["misses"], encoded, stats["corrupt_shards"]) == (3, 0, [], [])
    np.testing.assert_array_equal(vectors, first)


def test_shard_layout_and_checksum(tmp_path: Path) -> None:
    run(items(["cat", "dog"]), tmp_path)
    [shard] = shard_files(tmp_path)
    with np.load(shard, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    assert sorted(arrays) == ["digest", "has_content", "item_id", "vectors"]
    assert arrays["digest"].dtype == np.dtype("S16") and arrays["vectors"].dtype == np.float32
    assert shard.name == f"shard-{checksum(arrays)}.npz"
    assert (shard.parent / "key.txt").read_text() == "counting-v1\n"
    assert not list(shard.parent.glob(".*"))  # no temporary file left behind
    cache = VectorCache(tmp_path, "counting", "counting-v1")
    positions = cache.lookup(digests(["dog", "cat", "cow"]))
    assert positions[2] == -1 and (positions[:2] >= 0).all()
    np.testing.assert_array_equal(cache.get(positions[:2]).vectors, [[3, 0, 1], [3, 1, 0]])


def test_metadata_digest_follows_the_columns_it_reads(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"item_id": [1, 2, 3], "tags": ["1,2", "2", None], "duration_ms": [10_000.0, 20_000.0, 5_000.0],
         "video_type": ["NORMAL", "AD", None], "unused": ["x", "y", "z"]}
    )
    encoder = MetadataEncoder(MetadataEncoderConfig(min_count=1)).fit(table)
    base = encoder.input_digests(table)
    assert base.dtype == np.dtype("S16") and len(set(base.tolist())) == 3
    # what the encoder reads changes the digest; a column it ignores, or 9.0 written as 9, does not
    changed = table.assign(tags=["1,2", "3", None])
    assert (encoder.input_digests(changed) != base).tolist() == [False, True, False]
    assert (encoder.input_digests(table.assign(unused=["a", "b", "c"])) == base).all()
    same_value = table.assign(duration_ms=[10_000, 20_000, 5_000])
    assert (encoder.input_digests(same_value) == base).all()
    # a changed duration is a miss and gets the right vector
    _, stats = encode_with_cache(encoder, table, tmp_path, progress=False)
    moved = table.assign(duration_ms=[10_000.0, 20_000.0, 500_000.0])
    out, stats = encode_with_cache(encoder, moved, tmp_path, progress=False)
    assert (stats["hits"], stats["misses"]) == (2, 1)
    np.testing.assert_array_equal(out.vectors, encoder.encode(moved, progress=False).vectors)


def test_precomputed_digest_is_the_items_vector(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    pd.DataFrame({"item_id": [1, 2], "vector": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(path)
    encoder = PrecomputedEncoder(PrecomputedConfig(path=path))
    got = encoder.input_digests(pd.DataFrame({"item_id": [2, 1, 9]}))
    want = digests([np.float32([3, 4]).tobytes(), np.float32([1, 2]).tobytes(), b""])
    assert got.tolist() == want.tolist()
    assert encoder.cache_key() is None  # the vectors are on disk already: not cached


def test_no_items(tmp_path: Path) -> None:
    vectors, stats, encoded = run(items([]), tmp_path)
    assert vectors.shape == (0, 3) and (stats["hits"], stats["misses"]) == (0, 0) and not shard_files(tmp_path)


def test_a_reused_content_table_is_keyed_by_the_files_the_encoder_reads(tmp_path: Path) -> None:
    """``twotower.reuse`` reuses whole content tables: a changed vectors file or media file changes its key."""
    import os

    from twotower.config import parse_config
    from twotower.reuse import content_key

    vectors = tmp_path / "v.parquet"
    pd.DataFrame({"item_id": [1, 2], "vector": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(vectors)
    experiment = {"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-01", "val_date": "2022-05-02"}
    base = {"name": "t", "data": {"path": str(tmp_path)}, "experiments": [experiment]}
    precomputed = parse_config({**base, "content": {"encoder": "precomputed", "pca_components": 2,
                                                    "precomputed": {"path": str(vectors)}}})
    before = content_key(precomputed, "prepared")
    assert content_key(precomputed, "prepared") == before
    pd.DataFrame({"item_id": [1, 2], "vector": [[1.0, 2.0], [3.0, 5.0]]}).to_parquet(vectors)
    os.utime(vectors, ns=(vectors.stat().st_atime_ns, vectors.stat().st_mtime_ns + 10**9))
    assert content_key(precomputed, "prepared") != before

    (tmp_path / "media").mkdir()
    (tmp_path / "ckpt").mkdir()
    blip = parse_config({**base, "content": {"encoder": "blip", "blip": {"checkpoint": str(tmp_path / "ckpt"),
                                                                         "media_dir": str(tmp_path / "media")}}})
    before = content_key(blip, "prepared")
    (tmp_path / "media" / "1.jpg").write_bytes(b"cover")
    assert content_key(blip, "prepared") != before
