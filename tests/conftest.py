"""Expressions built on in-memory tables in the tests run on the project's configured DuckDB connection."""

import ibis

from twotower.data.engine import connect

ibis.set_backend(connect())
