"""``metadata``: the item's own side information as a sparse vector (the KuaiRand stand-in for BLIP).

KuaiRand ships no captions, covers or video files, so its benchmark uses this vector as the content
embedding; every result computed from it must say so (the pipeline's report carries the note).

Blocks of columns (the vocabulary is learnt by :meth:`MetadataEncoder.fit` on the training window's items):

- ``tag=<id>``: one column per tag id, 1 for each of the item's comma-separated tags; ``tag=<other>`` for
  tags unseen in training, ``tag=<missing>`` when the item has none;
- ``video_type=``, ``upload_type=``, ``music_type=``: one-hot over training values, ``<other>``, ``<missing>``;
- ``creator_id=``, ``music_id=``: one-hot for ids with at least ``min_count`` training items; rarer (or
  unseen) ids share ``rare_buckets`` hash buckets ``<rare:k>``; ``<missing>``;
- ``log_duration``: standardised log(1 + seconds) (0 when missing), ``duration_bin=k``: one-hot over
  ``duration_bins`` log-spaced bins from 1 s to 20 min, ``duration=<missing>``;
- ``log_aspect``: log(width / height), ``orientation=portrait|square|landscape``, ``aspect=<missing>``.

With the defaults the KuaiRand-Pure vector has about 170 columns (more than the 128 PCA components). The
cache digest of an item is the cleaned values above (tags, categories, ids, log duration, log aspect); the
fitted vocabulary and statistics are part of :meth:`MetadataEncoder.cache_key`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from twotower.config import MetadataEncoderConfig
from twotower.content.encoder import Encoder, ItemVectors, digests
from twotower.data.validate import DataError

CATEGORICAL = ("video_type", "upload_type", "music_type")
IDS = ("creator_id", "music_id")
# every column the encoder reads
INPUTS = ("tags", *CATEGORICAL, *IDS, "duration_ms", "width", "height")
OTHER, MISSING = "<other>", "<missing>"
# Every result computed from these vectors says so (the content report and the run's tables carry it).
METADATA_NOTE = (
    "content vectors come from the 'metadata' encoder (the item's own side information: tags, categories, "
    "creator, music, duration, aspect ratio) as a stand-in for BLIP video embeddings; this data set has no "
    "captions, covers or video files"
)


def _as_str(values: pd.Series) -> pd.Series:
    """Categorical values as clean strings (9.0 -> '9'); missing and empty values as None."""

    def clean(v: object) -> str | None:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        s = str(v).strip()
        return s or None

    return pd.Series([clean(v) for v in values.tolist()], index=values.index, dtype=object)


def _tags(values: pd.Series) -> list[list[str]]:
    """Comma-separated tag ids -> list of cleaned ids per item."""
    out = []
    for v in _as_str(values):
        out.append([t.strip() for t in v.split(",") if t.strip()] if v else [])
    return out


def _hash_bucket(ids: np.ndarray, buckets: int) -> np.ndarray:
    """A stable hash of int64 ids into ``[0, buckets)`` (splitmix64 finaliser)."""
    x = ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(buckets)).astype(np.int64)


def _column(items: pd.DataFrame, name: str) -> pd.Series:
    return (
        items[name]
        if name in items.columns
        else pd.Series([None] * len(items), index=items.index, dtype=object)
    )


class MetadataEncoder(Encoder):
    """Items -> (n, d) float32 side-information vectors; ``d`` depends on the fitted vocabulary."""

    name = "metadata"
    DURATION_RANGE_S = (1.0, 1200.0)

    def __init__(self, config: MetadataEncoderConfig) -> None:
        self.config = config
        # learned by fit (scikit-learn convention: learned state ends with "_")
        self.vocab_: dict[str, list[str]] | None = None
        self.duration_mean_ = 0.0
        self.duration_std_ = 1.0

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, items: pd.DataFrame) -> MetadataEncoder:
        """Learn tag, category and frequent-id vocabularies and duration statistics from ``items``."""
        vocab: dict[str, list[str]] = {}
        vocab["tag"] = sorted({t for tags in _tags(_column(items, "tags")) for t in tags}, key=_sort_key)
        for name in CATEGORICAL:
            vocab[name] = sorted(set(_as_str(_column(items, name)).dropna()), key=_sort_key)
        for name in IDS:
            counts = _as_str(_column(items, name)).dropna().value_counts()
            vocab[name] = sorted(counts.index[counts >= self.config.min_count], key=_sort_key)
        self.vocab_ = vocab
        seconds = self._log_seconds(items)
        seconds = seconds[~np.isnan(seconds)]
        if len(seconds) > 1:
            self.duration_mean_ = float(seconds.mean())
            self.duration_std_ = float(seconds.std()) or 1.0
        return self

    @property
    def columns(self) -> list[str]:
        """The name of every output column, in order."""
        if self.vocab_ is None:
            raise RuntimeError("MetadataEncoder.fit must be called before encoding")
        cols = [f"tag={t}" for t in self.vocab_["tag"]] + [f"tag={OTHER}", f"tag={MISSING}"]
        for name in CATEGORICAL:
            cols += [f"{name}={v}" for v in self.vocab_[name]] + [f"{name}={OTHER}", f"{name}={MISSING}"]
        for name in IDS:
            cols += [f"{name}={v}" for v in self.vocab_[name]]
            cols += [f"{name}=<rare:{k}>" for k in range(self.config.rare_buckets)] + [f"{name}={MISSING}"]
        cols += ["log_duration"] + [f"duration_bin={k}" for k in range(self.config.duration_bins)]
        cols += [f"duration={MISSING}", "log_aspect"]
        cols += [f"orientation={o}" for o in ("portrait", "square", "landscape")] + [f"aspect={MISSING}"]
        return cols

    def output_dim(self) -> int | None:
        """The number of columns, known after :meth:`fit`."""
        return None if self.vocab_ is None else len(self.columns)

    def check_inputs(self, items: pd.DataFrame) -> None:
        if not any(name in items.columns for name in INPUTS):
            raise DataError(
                f"the metadata encoder reads the items table's columns {', '.join(INPUTS)}, but it has none of "
                f"them (it has {', '.join(map(str, items.columns))}): set data.items_path to an items table "
                f"with them, or choose another content.encoder"
            )

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        """Per item the cleaned values that :meth:`encode` reads, as JSON, digested."""
        columns: list[list] = [[",".join(tags) for tags in _tags(_column(items, "tags"))]]
        columns += [_as_str(_column(items, name)).tolist() for name in (*CATEGORICAL, *IDS)]
        columns += [[v.hex() for v in self._log_seconds(items)], [v.hex() for v in self._log_aspect(items)]]
        return digests(json.dumps(row) for row in zip(*columns, strict=True))

    def cache_key(self) -> str:
        state = {
            "config": self.config.model_dump(),
            "columns": self.columns,
            "duration": [self.duration_mean_, self.duration_std_],
        }
        return "metadata-v1:" + hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()

    # ---- encoding ------------------------------------------------------------------------------
    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        columns = self.columns
        index = {c: i for i, c in enumerate(columns)}
        n = len(items)
        x = np.zeros((n, len(columns)), dtype=np.float32)
        rows = np.arange(n)
        present = np.zeros(n, dtype=bool)

        known_tags = set(self.vocab_["tag"])
        for r, tags in enumerate(_tags(_column(items, "tags"))):
            for t in tags:
                x[r, index[f"tag={t if t in known_tags else OTHER}"]] = 1.0
            if not tags:
                x[r, index[f"tag={MISSING}"]] = 1.0
            present[r] |= bool(tags)

        for name in CATEGORICAL:
            known = set(self.vocab_[name])
            values = _as_str(_column(items, name))
            cols = [index[f"{name}={MISSING if v is None else (v if v in known else OTHER)}"] for v in values]
            x[rows, cols] = 1.0
            present |= values.notna().to_numpy()

        for name in IDS:
            known = set(self.vocab_[name])
            values = _as_str(_column(items, name))
            cols = []
            for v in values:
                if v is None:
                    cols.append(index[f"{name}={MISSING}"])
                elif v in known:
                    cols.append(index[f"{name}={v}"])
                else:
                    bucket = _hash_bucket(np.array([_to_int(v)], dtype=np.int64), self.config.rare_buckets)[0]
                    cols.append(index[f"{name}=<rare:{bucket}>"])
            x[rows, cols] = 1.0
            present |= values.notna().to_numpy()

        seconds = self._log_seconds(items)
        missing = np.isnan(seconds)
        x[:, index["log_duration"]] = np.where(
            missing, 0.0, (seconds - self.duration_mean_) / self.duration_std_
        )
        lo, hi = np.log1p(self.DURATION_RANGE_S[0]), np.log1p(self.DURATION_RANGE_S[1])
        bins = np.clip(
            ((seconds - lo) / (hi - lo) * self.config.duration_bins), 0, self.config.duration_bins - 1
        )
        first_bin = index["duration_bin=0"]
        x[rows[~missing], first_bin + bins[~missing].astype(np.int64)] = 1.0
        x[missing, index[f"duration={MISSING}"]] = 1.0
        present |= ~missing

        aspect = self._log_aspect(items)
        missing = np.isnan(aspect)
        x[:, index["log_aspect"]] = np.where(missing, 0.0, aspect)
        orientation = np.where(aspect < -0.05, 0, np.where(aspect > 0.05, 2, 1))
        first_orientation = index["orientation=portrait"]
        x[rows[~missing], first_orientation + orientation[~missing]] = 1.0
        x[missing, index[f"aspect={MISSING}"]] = 1.0
        present |= ~missing
        return ItemVectors(x, present)

    @staticmethod
    def _log_seconds(items: pd.DataFrame) -> np.ndarray:
        """(n,) log(1 + duration in seconds); NaN where missing or not positive."""
        ms = pd.to_numeric(_column(items, "duration_ms"), errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ms > 0, np.log1p(ms / 1000.0), np.nan)

    @staticmethod
    def _log_aspect(items: pd.DataFrame) -> np.ndarray:
        """(n,) log(width / height); NaN where either is missing or not positive."""
        w = pd.to_numeric(_column(items, "width"), errors="coerce").to_numpy(dtype=np.float64)
        h = pd.to_numeric(_column(items, "height"), errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((w > 0) & (h > 0), np.log(w / h), np.nan)


def _to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return int.from_bytes(hashlib.sha1(value.encode()).digest()[:8], "little", signed=True)


def _sort_key(value: str) -> tuple[int, int | str]:
    """Numbers in numeric order, then strings."""
    try:
        return (0, int(value))
    except ValueError:
        return (1, value)
