"""The encoder registry: builds the encoder that ``content.encoder`` names from its config section.

Kept apart from the base class (``encoder.py``) so that imports run one way: every encoder imports the
base class, and only this module imports the encoders.
"""

from __future__ import annotations

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
