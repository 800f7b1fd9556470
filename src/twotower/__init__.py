"""twotower: two-tower retrieval experiments for short-video recommendation."""

__version__ = "0.1.0"
