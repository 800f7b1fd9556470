"""On-disk cache of encoded item vectors, keyed by encoder, version and item id.

Layout: ``<root>/<encoder name>/<sha1 of the version key, 16 hex>/`` holds ``key.txt`` (the full version
key, for humans) and append-only shards ``shard-*.npz`` with arrays ``item_id`` (n,) int64, ``vectors``
(n, dim) float32 and ``has_content`` (n,) bool. A run reads every shard, encodes only the items that are
not in any of them and writes those as one new shard, so re-running embeds only new items. Shards are
written to a temporary name and renamed, so an interrupted run never leaves a half-written shard.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.content.encoder import Encoder, ItemVectors


class VectorCache:
    """Vectors of one (encoder, version); ``lookup`` what is there, ``add`` what was encoded."""

    def __init__(self, root: Path, encoder_name: str, key: str) -> None:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.directory = Path(root) / encoder_name / digest
        self.key = key
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors: np.ndarray | None = None
        self._has = np.zeros(0, dtype=bool)
        self._load()

    def _load(self) -> None:
        shards = sorted(self.directory.glob("shard-*.npz"))
        if not shards:
            return
        ids, vectors, has = [], [], []
        for shard in shards:
            with np.load(shard) as data:
                ids.append(data["item_id"])
                vectors.append(data["vectors"])
                has.append(data["has_content"])
        dims = {v.shape[1] for v in vectors}
        if len(dims) != 1:
            raise ValueError(
                f"content cache {self.directory} mixes vector dimensions {sorted(dims)}; delete it"
            )
        all_ids = np.concatenate(ids)
        # keep the last occurrence of each id (a later shard wins)
        _, last = np.unique(all_ids[::-1], return_index=True)
        keep = len(all_ids) - 1 - last
        self._ids = all_ids[keep]
        self._vectors = np.concatenate(vectors)[keep]
        self._has = np.concatenate(has)[keep]

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``item_ids`` (n,): ``found`` (n,) bool and ``positions`` (n,) int64 into the cache (-1 if absent)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self._ids) == 0:
            return np.zeros(len(item_ids), dtype=bool), np.full(len(item_ids), -1, dtype=np.int64)
        order = np.argsort(self._ids)
        sorted_ids = self._ids[order]
        idx = np.clip(np.searchsorted(sorted_ids, item_ids), 0, len(sorted_ids) - 1)
        found = sorted_ids[idx] == item_ids
        positions = np.where(found, order[idx], -1)
        return found, positions

    def get(self, positions: np.ndarray) -> ItemVectors:
        """Cached vectors at ``positions`` (from :meth:`lookup`, all >= 0)."""
        assert self._vectors is not None
        return ItemVectors(self._vectors[positions], self._has[positions])

    def add(self, item_ids: np.ndarray, encoded: ItemVectors) -> None:
        """Write one new shard with ``item_ids`` (n,) and their vectors; keep them in memory too."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(item_ids) == 0:
            return
        if self._vectors is not None and self._vectors.shape[1] != encoded.vectors.shape[1]:
            raise ValueError(
                f"content cache {self.directory} holds {self._vectors.shape[1]}-d vectors, "
                f"the encoder now gives {encoded.vectors.shape[1]}-d ones; delete the cache folder"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "key.txt").write_text(self.key + "\n")
        name = f"shard-{uuid.uuid4().hex}"
        tmp = self.directory / f".{name}.tmp.npz"
        np.savez(tmp, item_id=item_ids, vectors=encoded.vectors, has_content=encoded.has_content)
        os.replace(tmp, self.directory / f"{name}.npz")
        self._ids = np.concatenate([self._ids, item_ids])
        self._vectors = (
            encoded.vectors.copy()
            if self._vectors is None
            else np.concatenate([self._vectors, encoded.vectors])
        )
        self._has = np.concatenate([self._has, encoded.has_content])


def encode_with_cache(
    encoder: Encoder, items: pd.DataFrame, cache_root: Path | None, progress: bool = True
) -> tuple[ItemVectors, dict]:
    """Encode ``items`` with ``encoder``, reading and filling the cache under ``cache_root``.

    Returns the vectors for all items (in order) and ``{"hits", "misses", "cache_dir"}``. Without a cache
    root or a cache key, every item is encoded and ``cache_dir`` is None.
    """
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    key = encoder.cache_key()
    if cache_root is None or key is None:
        return encoder.encode(items, progress=progress), {"hits": 0, "misses": len(items), "cache_dir": None}
    cache = VectorCache(cache_root, encoder.name, key)
    found, positions = cache.lookup(item_ids)
    missing = ~found
    if missing.any():
        fresh = encoder.encode(items.iloc[np.flatnonzero(missing)], progress=progress)
        cache.add(item_ids[missing], fresh)
    _, positions = cache.lookup(item_ids)
    stats = {"hits": int(found.sum()), "misses": int(missing.sum()), "cache_dir": str(cache.directory)}
    return cache.get(positions), stats
