"""On-disk cache of encoded item vectors, keyed by the encoder's version and a digest of each item's inputs.

Layout: ``<root>/<encoder name>/<16 hex of sha1(format + version key)>/`` holds ``key.txt`` (the full
version key, for people) and append-only shards ``shard-<sha256>.npz`` with the arrays

- ``digest`` (n,) ``S16``: :meth:`Encoder.input_digests`, what the encoder read for the item (its text,
  media file identity, metadata values); this, not the item id, is the entry's key;
- ``item_id`` (n,) int64: the item the entry was encoded for (for people; not part of the key);
- ``vectors`` (n, dim) float32 and ``has_content`` (n,) bool.

A changed caption, cover or media file, or another data set that reuses the same item ids, gives other
digests and therefore misses; the version key (model or checkpoint, settings, fitted state) separates
directories. A run reads every shard, encodes only the items whose digest is in none of them (once per
distinct digest) and writes those as one new shard: re-running encodes only new or changed items.

Integrity: a shard's name is the SHA-256 of its arrays (:func:`checksum`), and it is written under a
temporary name and renamed (``twotower.io``), so an interrupted run never leaves a half-written shard. A
shard that cannot be read with ``allow_pickle=False``, lacks an array, has inconsistent shapes or does not
match its checksum (truncated, bytes flipped) is named in a :class:`CorruptShardWarning`, moved to
``corrupt/`` beside it, and its items are encoded again, so the next run is clean.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.content.encoder import DIGEST_DTYPE, Encoder, ItemVectors
from twotower.io import write_atomic, write_text

# Part of the directory name: a change of the shard format starts new directories (older ones are ignored).
FORMAT = "shards-v2"
ARRAYS = ("digest", "item_id", "vectors", "has_content")


class CorruptShardWarning(UserWarning):
    """A cache shard was unreadable or failed its checksum; it was moved aside and its items re-encoded."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the name, dtype, shape and bytes of each of :data:`ARRAYS`."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def read_shard(path: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays of a shard, or ``(None, why it is unusable)``."""
    try:  # our own handle: np.load(path) leaks it when the zip is damaged
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            missing = sorted(set(ARRAYS) - set(data.files))
            if missing:
                return None, f"missing array(s) {missing}"
            arrays = {name: data[name] for name in ARRAYS}
    except Exception as exc:  # whatever a damaged file raises (zip, header, CRC, pickle refused): re-encode
        return None, f"unreadable: {type(exc).__name__}: {exc}".splitlines()[0]
    n = len(arrays["digest"])
    shapes_ok = (
        arrays["digest"].dtype == DIGEST_DTYPE
        and arrays["item_id"].dtype == np.int64
        and arrays["vectors"].dtype == np.float32
        and arrays["has_content"].dtype == bool
        and arrays["vectors"].ndim == 2
        and all(arrays[name].shape == (n,) for name in ("digest", "item_id", "has_content"))
        and arrays["vectors"].shape[0] == n
    )
    if not shapes_ok:
        return None, "arrays of unexpected type or shape"
    if checksum(arrays) != path.stem.removeprefix("shard-"):
        return None, "checksum mismatch"
    return arrays, ""


class VectorCache:
    """Vectors of one (encoder, version): ``lookup`` digests, ``get`` vectors, ``add`` what was encoded.

    ``corrupt`` lists the shards that were found damaged (and moved aside) while loading.
    """

    def __init__(self, root: Path, encoder_name: str, key: str) -> None:
        name = hashlib.sha1(f"{FORMAT};{key}".encode()).hexdigest()[:16]
        self.directory = Path(root) / encoder_name / name
        self.key = key
        self.corrupt: list[str] = []
        self._digests = np.zeros(0, dtype=DIGEST_DTYPE)  # sorted, unique
        self._vectors: np.ndarray | None = None  # (m, dim), row i belongs to _digests[i]
        self._has = np.zeros(0, dtype=bool)
        self._load()

    def _set_aside(self, shard: Path, reason: str) -> None:
        """Warn (one line naming the file) and move a damaged shard to ``corrupt/``."""
        self.corrupt.append(str(shard))
        target = self.directory / "corrupt" / shard.name
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(shard, target)
            where = f"moved to {target}"
        except OSError as exc:
            where = f"left in place ({exc.strerror}) and skipped"
        warnings.warn(
            f"content cache shard {shard} is corrupt ({reason}); {where}; its items will be encoded again",
            CorruptShardWarning,
            stacklevel=4,
        )

    def _load(self) -> None:
        digests, vectors, has = [], [], []
        for shard in sorted(self.directory.glob("shard-*.npz")):
            arrays, reason = read_shard(shard)
            if arrays is not None and vectors and arrays["vectors"].shape[1] != vectors[0].shape[1]:
                arrays, reason = None, f"{arrays['vectors'].shape[1]}-d vectors, the others are {vectors[0].shape[1]}-d"
            if arrays is None:
                self._set_aside(shard, reason)
                continue
            digests.append(arrays["digest"])
            vectors.append(arrays["vectors"])
            has.append(arrays["has_content"])
        if digests:
            self._merge(np.concatenate(digests), np.concatenate(vectors), np.concatenate(has))

    def _merge(self, digests: np.ndarray, vectors: np.ndarray, has: np.ndarray) -> None:
        """Add entries to the in-memory index (an entry already there stays: equal digests, equal vectors)."""
        if self._vectors is not None:
            digests = np.concatenate([self._digests, digests])
            vectors = np.concatenate([self._vectors, vectors])
            has = np.concatenate([self._has, has])
        self._digests, first = np.unique(digests, return_index=True)
        self._vectors, self._has = vectors[first], has[first]

    def __len__(self) -> int:
        return len(self._digests)

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """For ``digests`` (n,) ``S16``: (n,) int64 positions into the cache, -1 where absent."""
        digests = np.asarray(digests, dtype=DIGEST_DTYPE)
        if len(self._digests) == 0:
            return np.full(len(digests), -1, dtype=np.int64)
        idx = np.clip(np.searchsorted(self._digests, digests), 0, len(self._digests) - 1)
        return np.where(self._digests[idx] == digests, idx, -1).astype(np.int64)

    def get(self, positions: np.ndarray) -> ItemVectors:
        """Cached vectors at ``positions`` (from :meth:`lookup`, all >= 0)."""
        assert self._vectors is not None
        return ItemVectors(self._vectors[positions], self._has[positions])

    def add(self, digests: np.ndarray, item_ids: np.ndarray, encoded: ItemVectors) -> None:
        """Write one new shard with ``digests`` (n,), ``item_ids`` (n,) and their vectors; index them too."""
        if len(digests) == 0:
            return
        if self._vectors is not None and self._vectors.shape[1] != encoded.vectors.shape[1]:
            # the version key should have changed with the dimension: the key is wrong, not the data
            raise ValueError(
                f"content cache {self.directory} holds {self._vectors.shape[1]}-d vectors, "
                f"the encoder now gives {encoded.vectors.shape[1]}-d ones for the same version key; "
                f"delete the cache folder"
            )
        arrays = {
            "digest": np.asarray(digests, dtype=DIGEST_DTYPE),
            "item_id": np.asarray(item_ids, dtype=np.int64),
            "vectors": encoded.vectors,
            "has_content": encoded.has_content,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text(self.directory / "key.txt", self.key + "\n")
        write_atomic(self.directory / f"shard-{checksum(arrays)}.npz", lambda tmp: np.savez(tmp, **arrays))
        self._merge(arrays["digest"], arrays["vectors"], arrays["has_content"])


def encode_with_cache(
    encoder: Encoder, items: pd.DataFrame, cache_root: Path | None, progress: bool = True
) -> tuple[ItemVectors, dict]:
    """Encode ``items`` with ``encoder``, reading and filling the cache under ``cache_root``.

    Returns the vectors for all items (in order) and ``{"hits", "misses", "cache_dir", "corrupt_shards"}``
    (items found / not found; the shards set aside). Without a cache root or a cache key, every item is
    encoded and ``cache_dir`` is None.
    """
    key = encoder.cache_key()
    if cache_root is None or key is None or len(items) == 0:
        encoded = encoder.encode(items, progress=progress)
        return encoded, {"hits": 0, "misses": len(items), "cache_dir": None, "corrupt_shards": []}
    digests = encoder.input_digests(items)
    cache = VectorCache(cache_root, encoder.name, key)
    positions = cache.lookup(digests)
    missing = np.flatnonzero(positions < 0)
    if len(missing):
        # one encoding per distinct input (e.g. equal captions of two items)
        new_digests, first = np.unique(digests[missing], return_index=True)
        rows = missing[first]
        fresh = encoder.encode(items.iloc[rows], progress=progress)
        cache.add(new_digests, items["item_id"].to_numpy(dtype=np.int64)[rows], fresh)
        positions = cache.lookup(digests)
    stats = {
        "hits": len(items) - len(missing),
        "misses": len(missing),
        "cache_dir": str(cache.directory),
        "corrupt_shards": cache.corrupt,
    }
    return cache.get(positions), stats
