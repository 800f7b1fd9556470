"""precomputed encoder: Parquet and .npz files, hand-checked lookup, and the bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twotower.config import PrecomputedConfig
from twotower.content.precomputed import PrecomputedEncoder

ITEMS = pd.DataFrame({"item_id": [3, 1, 7]})


def write_parquet(path: Path, ids: list[int], vectors: list) -> Path:
    pd.DataFrame({"item_id": ids, "vector": vectors}).to_parquet(path)
    return path


def encode(path: Path, dim: int | None = None, items: pd.DataFrame = ITEMS):
    encoder = PrecomputedEncoder(PrecomputedConfig(path=path, dim=dim))
    return encoder, encoder.encode(items, progress=False)


def test_parquet_lookup_and_missing_items(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "v.parquet", [1, 2, 3], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    encoder, out = encode(path, dim=2)
    np.testing.assert_array_equal(out.vectors, [[5, 6], [1, 2], [0, 0]])
    assert out.vectors.dtype == np.float32
    assert out.has_content.tolist() == [True, True, False]
    assert encoder.last_missing == {"count": 1, "examples": [7]}


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    np.savez(path, item_id=np.array([7, 1]), vector=np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 0.5]]))
    _, out = encode(path)
    np.testing.assert_array_equal(out.vectors, [[0, 0, 0], [0.5, 0.5, 0.5], [1, 0, 2]])


@pytest.mark.parametrize(
    ("ids", "vectors", "dim", "message"),
    [
        ([1, 3], [[1.0, 2.0], [1.0]], None, "different lengths"),
        ([1, 3], [[1.0, 2.0], [1.0, 3.0]], 3, "2 dimensions, the config expects 3"),
        ([1, 3], [[1.0, float("nan")], [1.0, 3.0]], None, r"NaN or infinite values, e.g. item ids \[1\]"),
        ([1, 3], [[1.0, float("inf")], [1.0, 3.0]], None, "NaN or infinite"),
        ([1, 1], [[1.0, 2.0], [1.0, 3.0]], None, "duplicate item ids"),
        ([1, 3], [[1.0, 2.0], None], None, "null vector"),
        ([100, 200], [[1.0, 2.0], [1.0, 3.0]], None, "none of the 3 items has a vector"),
    ],
)
def test_bad_parquet_inputs(tmp_path: Path, ids, vectors, dim, message) -> None:
    path = write_parquet(tmp_path / "bad.parquet", ids, vectors)
    with pytest.raises(ValueError, match=message):
        encode(path, dim=dim)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        encode(tmp_path / "absent.parquet")
    pd.DataFrame({"id": [1], "vector": [[1.0]]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item_id'\]"):
        encode(tmp_path / "cols.parquet")
    np.savez(tmp_path / "shape.npz", item_id=np.array([1, 2]), vector=np.ones(2))
    with pytest.raises(ValueError, match="shape"):
        encode(tmp_path / "shape.npz")
    (tmp_path / "v.csv").write_text("item_id,vector\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        encode(tmp_path / "v.csv")
