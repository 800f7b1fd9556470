"""Input validation: every problem is a :class:`DataError` that names the file and the column."""

from __future__ import annotations

from collections.abc import Mapping

import ibis.expr.datatypes as dt
import ibis.expr.types as ir


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file and the column."""


# What a column must be: "integer", "number" (integer or floating), "string", "date", "timestamp".
Kind = str


def _matches(dtype: dt.DataType, kind: Kind) -> bool:
    if kind == "integer":
        return dtype.is_integer()
    if kind == "number":
        return dtype.is_integer() or dtype.is_floating() or dtype.is_decimal()
    if kind == "string":
        return dtype.is_string()
    if kind == "date":
        return dtype.is_date() or dtype.is_string() or dtype.is_timestamp()
    if kind == "timestamp":
        return dtype.is_timestamp() or dtype.is_string() or dtype.is_integer()
    raise ValueError(f"unknown column kind {kind!r}")


def require_columns(table: ir.Table, required: Mapping[str, Kind], source: str) -> None:
    """Stop when a required column is missing or has the wrong type; the message names ``source``."""
    schema = table.schema()
    missing = [name for name in required if name not in schema]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(schema.names)})"
        )
    check_types(table, {name: required[name] for name in required}, source)


def check_types(table: ir.Table, kinds: Mapping[str, Kind], source: str) -> None:
    """Stop at the first present column in ``kinds`` whose type does not match."""
    schema = table.schema()
    for name, kind in kinds.items():
        if name in schema and not _matches(schema[name], kind):
            raise DataError(f"{source}: column '{name}' has type {schema[name]}, expected {kind}")
