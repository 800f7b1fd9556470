"""Input validation: every problem is a :class:`DataError` that names the file and the column."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file and the column."""


# What a column must be: "integer", "number" (integer or floating), "flag" (integer or boolean), "string",
# "date", "timestamp".
Kind = str


def _integral(dtype: dt.DataType) -> bool:
    """Integers, and decimals without a fraction (how engines type integers beyond int64, e.g. uint64)."""
    return dtype.is_integer() or (dtype.is_decimal() and dtype.scale == 0)


def _matches(dtype: dt.DataType, kind: Kind) -> bool:
    if kind == "integer":
        return _integral(dtype)
    if kind == "number":
        return dtype.is_integer() or dtype.is_floating() or dtype.is_decimal()
    if kind == "flag":
        return _integral(dtype) or dtype.is_boolean()
    if kind == "string":
        return dtype.is_string()
    if kind == "date":
        return dtype.is_date() or dtype.is_string() or dtype.is_timestamp()
    if kind == "timestamp":
        return dtype.is_timestamp() or dtype.is_string() or _integral(dtype)
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


def as_int64(table: ir.Table, columns: Iterable[str], source: str) -> ir.Table:
    """Cast integer columns to int64; a value outside int64 (e.g. a uint64 id above 2^63 - 1) stops.

    Only types that can hold such values (unsigned 64-bit, integral decimals) cost a query.
    """
    columns = [c for c in columns if c in table.schema()]
    wide = [c for c in columns if (table[c].type().is_unsigned_integer() and table[c].type().nbytes == 8) or table[c].type().is_decimal()]
    if wide:
        bounds = table.aggregate(**{f"lo{i}": table[c].min() for i, c in enumerate(wide)}, **{f"hi{i}": table[c].max() for i, c in enumerate(wide)})
        row = bounds.to_pyarrow().to_pylist()[0]
        for i, column in enumerate(wide):
            lo, hi = row[f"lo{i}"], row[f"hi{i}"]
            outside = hi if hi is not None and hi > INT64_MAX else lo if lo is not None and lo < INT64_MIN else None
            if outside is not None:
                raise DataError(
                    f"{source}: column '{column}' holds {int(outside)}, outside the signed 64-bit range "
                    f"(-2^63 .. 2^63 - 1) that ids and counts must fit in; map such ids to smaller ones "
                    "(e.g. a dense index or a 63-bit hash) before preparing"
                )
    return table.mutate(**{c: table[c].cast("int64") for c in columns})


def float64(value: float) -> ir.FloatingScalar:
    """A float64 literal that every engine types as DOUBLE.

    Ibis writes a float literal as bare SQL (``1.5``), which Spark reads as DECIMAL(2,1), and folds a cast
    of a literal away; the shortest decimal text cast to DOUBLE is exact on every engine.
    """
    return ibis.literal(repr(float(value))).cast("float64")


def not_finite(column: ir.NumericValue) -> ir.BooleanValue:
    """NaN or ±inf (never NULL: a missing value is not "not finite").

    Written out because Ibis compiles ``isinf`` to a constant FALSE on Spark. ``x - x != 0`` is the test
    that counts: it is NaN for NaN and ±inf, 0 for every finite value, on every engine. ``isnan`` alone is
    not enough on DuckDB (2.0), which folds ``isnan(x)`` to FALSE from a Parquet column's min/max
    statistics, and those ignore NaN: a NaN in a column without ±inf was kept.
    """
    pos, neg = ibis.literal(math.inf, type="float64"), ibis.literal(-math.inf, type="float64")
    return ibis.coalesce(column.isnan() | (column == pos) | (column == neg) | ((column - column) != 0), False)


def finite_or_null(column: ir.NumericValue) -> ir.NumericValue:
    """NaN and ±inf become NULL (for side information, where a missing value is handled)."""
    return ibis.ifelse(not_finite(column), ibis.null(column.type()), column)
