"""The content-encoder interface: the :class:`Encoder` base class and its output, :class:`ItemVectors`.

An encoder turns the canonical items table (``twotower.data.schema``: one row per item) into a float32
matrix with one row per item, in the table's order. Encoders that learn something from the items (the
``metadata`` vocabulary) do it in :meth:`Encoder.fit`, which the pipeline calls with the training window's
items only. Before anything is encoded, :meth:`Encoder.output_dim` (the vector length, where it is known
without encoding) and :meth:`Encoder.check_inputs` (does any item have what the encoder reads?) let the
caller fail early with the real cause.

The on-disk cache (``content/cache.py``) needs two things: ``cache_key`` names the encoder's version
(checkpoint, settings, fitted state; ``None`` means the vectors are cheap or already on disk and are not
cached), and :meth:`Encoder.input_digests` gives per item a digest of exactly what the encoder reads for it
(text, media file identity, metadata values, the precomputed vector), so a changed input is a cache miss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from twotower.data.validate import DataError

# Digest of one item's encoder inputs: 16 bytes of BLAKE2b (a chance collision among 10^9 entries is
# about 10^-21), stored as NumPy bytes ``S16`` so that cache shards load without pickle.
DIGEST_BYTES = 16
DIGEST_DTYPE = np.dtype(f"S{DIGEST_BYTES}")


@dataclass
class ItemVectors:
    """Vectors for ``n`` items: ``vectors`` (n, dim) float32; ``has_content`` (n,) bool.

    Items without any content (no caption, no media, no precomputed vector) get a zero row and
    ``has_content = False``; the pipeline leaves them out of the PCA fit and maps them to the origin.
    """

    vectors: np.ndarray
    has_content: np.ndarray

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.has_content = np.asarray(self.has_content, dtype=bool)
        if self.vectors.ndim != 2 or self.has_content.shape != (self.vectors.shape[0],):
            raise ValueError(f"bad encoder output shapes {self.vectors.shape} and {self.has_content.shape}")


class Encoder:
    """Base class: ``fit`` (optional), ``output_dim``, ``check_inputs``, ``cache_key``, ``input_digests``,
    ``encode``; ``name`` identifies it in the cache and in messages."""

    name: str = "encoder"

    def fit(self, items: pd.DataFrame) -> Encoder:
        """Learn from the training window's items (default: nothing to learn)."""
        return self

    def output_dim(self) -> int | None:
        """The vector length, where it is known without encoding (after ``fit``); None when it is not."""
        return None

    def check_inputs(self, items: pd.DataFrame) -> None:
        """Raise :class:`~twotower.data.validate.DataError` when no item of ``items`` has anything this
        encoder reads, naming what is missing and the config key or file that provides it."""

    def cache_key(self) -> str | None:
        """A string that changes whenever the encoder would map the same inputs to another vector
        (model, settings, fitted state); None: the vectors are not cached."""
        return None

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        """(n,) ``DIGEST_DTYPE``: per item, a digest of everything this encoder reads for it.

        Two items (or two runs) with equal digests and equal :meth:`cache_key` get the same vector. Every
        encoder with a ``cache_key`` must implement it.
        """
        raise NotImplementedError(f"encoder {self.name!r} does not implement input_digests")

    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        """Encode ``len(items)`` items into an :class:`ItemVectors` with one row per item, in order."""
        raise NotImplementedError


def digests(values: Iterable[bytes | str]) -> np.ndarray:
    """(n,) ``DIGEST_DTYPE``: the BLAKE2b digest of each value (``str`` is hashed as UTF-8)."""
    out = [
        hashlib.blake2b(v.encode("utf-8") if isinstance(v, str) else v, digest_size=DIGEST_BYTES).digest()
        for v in values
    ]
    return np.array(out, dtype=DIGEST_DTYPE) if out else np.zeros(0, dtype=DIGEST_DTYPE)


# Control characters (Unicode category Cc: C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F). A NUL ends the
# text for some tokenizers (e5 embedded every caption with a NUL as its prefix), and none of them carries
# meaning in a caption: tab, line feed, vertical tab, form feed and carriage return become a space, every
# other control character is removed.
_SPACE_CONTROLS = r"[\t\n\x0b\x0c\r]"
_OTHER_CONTROLS = r"[\x00-\x08\x0e-\x1f\x7f-\x9f]"


def clean_text(values: pd.Series) -> pd.Series:
    """Strings with control characters replaced (see ``_SPACE_CONTROLS``) or removed, then stripped;
    missing values become ''."""
    text = values.astype("string").fillna("")
    text = text.str.replace(_SPACE_CONTROLS, " ", regex=True).str.replace(_OTHER_CONTROLS, "", regex=True)
    return text.str.strip()


def text_columns(items: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """The columns of ``items`` that ``fields`` name (``manual_cover_text`` falls back to ``cover_text``)."""
    columns = []
    for field in fields:
        column = field if field in items.columns else {"manual_cover_text": "cover_text"}.get(field, field)
        if column in items.columns:
            columns.append(column)
    return columns


def text_of(items: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """Per item, the non-empty cleaned values of ``fields`` joined by a newline ('' when all are missing).

    Each value is cleaned by :func:`clean_text` (control characters replaced or removed, stripped).
    ``manual_cover_text`` (KuaiRec's name) is read from the canonical ``cover_text`` column when the table
    has no column of that name. Missing columns are treated as empty.
    """
    parts = [clean_text(items[column]) for column in text_columns(items, fields)]
    if not parts:
        return [""] * len(items)
    return ["\n".join(v for v in values if v) for values in zip(*(p.tolist() for p in parts), strict=True)]


def require_text(items: pd.DataFrame, fields: tuple[str, ...], encoder: str, key: str | None = None) -> list[str]:
    """The texts of :func:`text_of`; a :class:`DataError` when the items table has none of ``fields`` or
    every text is empty (``key``, if any, names the config key that lists the fields)."""
    wanted = ", ".join(fields) + (f" ({key})" if key else "")
    if not text_columns(items, fields):
        raise DataError(
            f"the {encoder} encoder reads item text from the column(s) {wanted}, but the items table "
            f"has none of them (it has {', '.join(map(str, items.columns))}): set data.items_path to an items "
            f"table with them, or choose another content.encoder"
        )
    texts = text_of(items, fields)
    if len(texts) and not any(texts):
        raise DataError(
            f"the {encoder} encoder reads item text from the column(s) {wanted}, but they are empty "
            f"for all {len(texts)} items: fill them in the items table (data.items_path), or choose another "
            f"content.encoder"
        )
    return texts
