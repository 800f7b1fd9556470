"""The content table: encode every item (with the cache), fit PCA on the training window's items, and
write/read the table (``item_id`` + a ``pca_components``-d vector per item) as Parquet.

Everything that can be checked before encoding is: ``content.pca_components`` against the encoder's
output dimension (:func:`check_content`, also usable before ``prepare``), and whether the items carry
anything the encoder reads (:meth:`Encoder.check_inputs`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twotower.config import Config, ConfigError, ContentConfig
from twotower.content.cache import encode_with_cache
from twotower.content.encoder import Encoder
from twotower.content.metadata import METADATA_NOTE
from twotower.content.pca import ContentPCA
from twotower.content.registry import make_encoder
from twotower.data.validate import DataError
from twotower.io import write_atomic, write_json


def check_pca_dim(encoder: Encoder, pca_components: int) -> None:
    """A :class:`ConfigError` when ``pca_components`` exceeds the encoder's output dimension (where it is
    known without encoding; for ``metadata`` after ``fit``)."""
    dim = encoder.output_dim()
    if dim is not None and pca_components > dim:
        raise ConfigError(
            f"content.pca_components = {pca_components} is larger than the {encoder.name} encoder's output "
            f"dimension {dim}: PCA cannot give more components than the vectors have; set "
            f"content.pca_components to at most {dim}"
        )


def check_content(content: ContentConfig) -> None:
    """Checks that need no data (run them before ``prepare``): the encoder's files exist and
    ``pca_components`` fits its output dimension (not known for ``metadata`` before its vocabulary)."""
    check_pca_dim(make_encoder(content), content.pca_components)


def build_item_table(
    config: Config, items: pd.DataFrame, train_item_ids: np.ndarray, progress: bool = True
) -> tuple[pd.DataFrame, dict]:
    """Encode ``items`` (canonical items table, n rows) and reduce them with PCA fitted on ``train_item_ids``.

    Returns a DataFrame with ``item_id`` (int64) and ``vector`` (float32 array of length
    ``config.content.pca_components`` per row), in the order of ``items``, and a report dict.
    """
    content = config.content
    if "item_id" not in items.columns:
        raise ValueError("the items table has no 'item_id' column")
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    if len(np.unique(item_ids)) != len(item_ids):
        raise ValueError("the items table has duplicate item ids")
    is_train = np.isin(item_ids, np.asarray(train_item_ids, dtype=np.int64))

    started = time.perf_counter()
    encoder = make_encoder(content)
    encoder.fit(items.iloc[np.flatnonzero(is_train)])
    check_pca_dim(encoder, content.pca_components)
    encoder.check_inputs(items)
    encoded, cache_stats = encode_with_cache(encoder, items, content.cache_dir, progress=progress)
    encode_seconds = time.perf_counter() - started

    fit_rows = is_train & encoded.has_content
    if not fit_rows.any():
        raise DataError(
            f"none of the {int(is_train.sum())} training-window items has content for the {content.encoder} "
            f"encoder ({int(encoded.has_content.sum())} of all {len(items)} items have some): PCA needs "
            f"training-window items with content; check the items table (data.items_path) and [content]"
        )
    pca = ContentPCA(content.pca_components, seed=config.seed).fit(encoded.vectors[fit_rows])
    reduced = pca.transform(encoded.vectors, encoded.has_content)

    table = pd.DataFrame({"item_id": item_ids, "vector": list(reduced)})
    without = item_ids[~encoded.has_content]
    report = {
        "encoder": content.encoder,
        "encoder_version": encoder.cache_key(),
        "input_dim": int(encoded.vectors.shape[1]),
        "pca_components": content.pca_components,
        "explained_variance_ratio_total": pca.explained_variance_total,
        "explained_variance_ratio_first_10": [round(float(v), 6) for v in pca.explained_variance_ratio_[:10]],
        "items": len(items),
        "train_items": int(is_train.sum()),
        "pca_fit_items": int(fit_rows.sum()),
        "items_without_content": int(len(without)),
        "items_without_content_examples": without[:10].tolist(),
        "cache_hits": cache_stats["hits"],
        "cache_misses": cache_stats["misses"],
        "cache_dir": cache_stats["cache_dir"],
        "cache_corrupt_shards": cache_stats["corrupt_shards"],
        "encode_seconds": round(encode_seconds, 3),
    }
    if content.encoder == "metadata":
        report["note"] = METADATA_NOTE
    return table, report


def write_item_table(table: pd.DataFrame, path: Path) -> None:
    """Write ``item_id`` int64 and ``vector`` as a fixed-size list of float32 to Parquet."""
    vectors = (
        np.stack(table["vector"].to_list()).astype(np.float32) if len(table) else np.zeros((0, 0), np.float32)
    )
    dim = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
    arrow = pa.table({"item_id": pa.array(table["item_id"].to_numpy(dtype=np.int64)), "vector": column})
    write_atomic(path, lambda tmp: pq.write_table(arrow, tmp))


def read_item_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(item_id (n,) int64, vectors (n, k) float32)`` written by :func:`write_item_table`."""
    table = pq.read_table(path)
    ids = table.column("item_id").to_numpy()
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids.astype(np.int64), flat.astype(np.float32).reshape(len(ids), -1)


def embed_prepared(config: Config, prepared_dir: Path, out_dir: Path, experiment_id: int | None = None) -> dict:
    """Build the content table for one experiment's prepared directory (``items.parquet``, written by
    ``prepare``) and write ``item_embeddings.parquet`` and ``item_embeddings.json`` (the report) into
    ``out_dir``; returns the report."""
    items_path = Path(prepared_dir) / "items.parquet"
    if not items_path.is_file():
        raise ValueError(f"{items_path} not found: run `twotower prepare` first (and pass its --out as --prepared)")
    items = pd.read_parquet(items_path)
    if "in_train" not in items.columns:
        raise ValueError(f"{items_path} has no 'in_train' column; re-run `twotower prepare`")
    train_ids = items.loc[items["in_train"].astype(bool), "item_id"].to_numpy(dtype=np.int64)
    table, report = build_item_table(config, items, train_ids)
    if experiment_id is not None:
        report["experiment"] = experiment_id
    write_item_table(table, Path(out_dir) / "item_embeddings.parquet")
    report["path"] = str(Path(out_dir) / "item_embeddings.parquet")
    write_json(Path(out_dir) / "item_embeddings.json", report)
    return report


def read_item_table_frame(path: Path) -> pd.DataFrame:
    """The content table as a DataFrame: ``item_id`` (int64) and ``vector`` (float32 array per row)."""
    ids, vectors = read_item_table(path)
    return pd.DataFrame({"item_id": ids, "vector": list(vectors)})
