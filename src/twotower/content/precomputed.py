"""``precomputed``: item vectors made elsewhere, read from a Parquet or NumPy file.

Accepted files:

- Parquet with columns ``item_id`` (integer) and ``vector`` (a list of numbers per row, all the same length);
- NumPy ``.npz`` with arrays ``item_id`` (n,) and ``vector`` (n, d).

Checks, each a :class:`~twotower.data.validate.DataError` (a ``ValueError``) that names the file: missing
columns or arrays, vectors of different lengths, a length other than the configured ``dim``, NaN or
infinite values, duplicate item ids, and no vector at all for the items asked for. Items without a vector get a zero row and ``has_content = False``; their number
and a few of their ids are in :attr:`PrecomputedEncoder.last_missing` and the pipeline's report.

The vectors are read from the file on every run (they are not cached: they already are on disk);
:meth:`PrecomputedEncoder.output_dim` reads only the file's header (``.npz``) or first row (Parquet), so a
``content.pca_components`` above the file's dimension is found before anything else is done.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twotower.config import PrecomputedConfig
from twotower.content.encoder import Encoder, ItemVectors, digests
from twotower.data.validate import DataError


def read_vectors(path: Path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check ``(item_id (n,) int64, vectors (n, d) float32)`` from a Parquet or .npz file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"precomputed vectors file not found: {path}")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        missing = {"item_id", "vector"} - set(table.column_names)
        if missing:
            raise DataError(f"{path}: missing column(s) {sorted(missing)}; it has {table.column_names}")
        ids = table.column("item_id").to_numpy()
        rows = table.column("vector").to_pylist()
        if any(r is None for r in rows):
            raise DataError(f"{path}: {sum(r is None for r in rows)} row(s) have a null vector")
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise DataError(f"{path}: vectors have different lengths {sorted(lengths)[:10]}")
        vectors = np.asarray(rows, dtype=np.float64).reshape(len(rows), lengths.pop() if lengths else 0)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = {"item_id", "vector"} - set(data.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; it has {data.files}")
            ids, vectors = data["item_id"], np.asarray(data["vector"], dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise DataError(
                f"{path}: 'vector' must have shape (n, d) with n = len(item_id) = {len(ids)}; got {vectors.shape}"
            )
    else:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use .parquet (item_id, vector) or .npz"
        )

    if not np.issubdtype(np.asarray(ids).dtype, np.integer):
        raise DataError(f"{path}: item_id must be integers, got {np.asarray(ids).dtype}")
    ids = np.asarray(ids, dtype=np.int64)
    if dim is not None and vectors.shape[1] != dim:
        raise DataError(f"{path}: vectors have {vectors.shape[1]} dimensions, the config expects {dim}")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path}: {int(bad.sum())} vector(s) contain NaN or infinite values, e.g. item ids {ids[bad][:5].tolist()}"
        )
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: duplicate item ids, e.g. {unique[counts > 1][:5].tolist()}")
    return ids, vectors.astype(np.float32)


def vector_dim(path: Path) -> int:
    """The vector length of a Parquet or .npz vectors file, from its schema, header or first vector only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"precomputed vectors file not found: {path} (content.precomputed.path)")
    try:
        return _vector_dim(path)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the vectors file ({type(exc).__name__}: {exc})") from None


def _vector_dim(path: Path) -> int:
    if path.suffix == ".parquet":
        parquet = pq.ParquetFile(path)
        if "vector" not in parquet.schema_arrow.names:
            raise DataError(f"{path}: missing column(s) ['vector']; it has {parquet.schema_arrow.names}")
        kind = parquet.schema_arrow.field("vector").type
        if isinstance(kind, pa.FixedSizeListType):
            return int(kind.list_size)
        for batch in parquet.iter_batches(batch_size=256, columns=["vector"]):
            for row in batch.column(0).to_pylist():
                if row is not None:
                    return len(row)
        raise DataError(f"{path}: no vectors")
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as archive, archive.open("vector.npy") as handle:
            version = np.lib.format.read_magic(handle)
            shape = (
                np.lib.format.read_array_header_1_0(handle)[0]
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(handle)[0]
            )
        if len(shape) != 2:
            raise DataError(f"{path}: 'vector' must have shape (n, d); got {shape}")
        return int(shape[1])
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .parquet (item_id, vector) or .npz")


class PrecomputedEncoder(Encoder):
    """Look up each item's vector in the file; (n, d) float32, zero rows for items without one."""

    name = "precomputed"

    def __init__(self, config: PrecomputedConfig) -> None:
        self.config = config
        self._data: tuple[np.ndarray, np.ndarray] | None = None
        self.last_missing: dict = {"count": 0, "examples": []}

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._data is None:
            self._data = read_vectors(self.config.path, self.config.dim)
        return self._data

    def output_dim(self) -> int:
        """The file's vector length (from its header or first row unless the file is already read)."""
        dim = self._data[1].shape[1] if self._data is not None else vector_dim(self.config.path)
        if self.config.dim is not None and dim != self.config.dim:
            raise DataError(
                f"{self.config.path}: vectors have {dim} dimensions, the config expects {self.config.dim} "
                f"(content.precomputed.dim)"
            )
        return dim

    def _positions(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(n,) item ids and (n,) row of each in the file (-1: no vector); a :class:`DataError` when no
        item has a vector."""
        ids, _ = self._vectors()
        wanted = items["item_id"].to_numpy(dtype=np.int64)
        positions = pd.Index(ids).get_indexer(wanted)
        if len(wanted) and not (positions >= 0).any():
            raise DataError(
                f"{self.config.path}: none of the {len(wanted)} items has a vector "
                f"(items e.g. {wanted[:5].tolist()}, file ids e.g. {ids[:5].tolist()}); "
                f"check content.precomputed.path and the item ids"
            )
        return wanted, positions

    def check_inputs(self, items: pd.DataFrame) -> None:
        self._positions(items)

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        """Per item the digest of its vector's float32 bytes (of b'' when it has none)."""
        _, vectors = self._vectors()
        _, positions = self._positions(items)
        return digests(vectors[p].tobytes() if p >= 0 else b"" for p in positions)

    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        _, vectors = self._vectors()
        wanted, positions = self._positions(items)
        found = positions >= 0
        out = np.zeros((len(wanted), vectors.shape[1]), dtype=np.float32)
        out[found] = vectors[positions[found]]
        self.last_missing = {"count": int((~found).sum()), "examples": wanted[~found][:10].tolist()}
        return ItemVectors(out, found)
