"""Catalog retrieval: per-user item sets, a FAISS index over item vectors, catalog metrics (docs/retrieval.md)."""
