"""Source files into (lazy) tables: one Parquet or CSV file, or a directory of them (Hive partitions too).

What can be checked before the engine runs is checked here, so that a bad file stops with a one-line
:class:`DataError` naming it: a missing path, a 0-byte, truncated or non-Parquet file, an empty directory,
files of one directory whose columns differ (both files and the column are named), a file without rows.

A directory is read recursively; files and folders whose names start with ``.`` or ``_`` (``_SUCCESS``,
``.crc`` files, ``_temporary/``) are skipped, as Spark and Hive do. Folders named ``key=value``
(``dt=2024-03-01/part-0.parquet``) are Hive partitions: ``key`` becomes a column.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.parquet as pq

from twotower.data.validate import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
# Spark's CSV reader parses only Java's spellings ("NaN", "Infinity") as numbers; these are the ones that
# pandas, NumPy and DuckDB write. (DuckDB's reader knows both.)
SPARK_CSV_OPTIONS = {"nanValue": "nan", "positiveInf": "inf", "negativeInf": "-inf"}
# The types DuckDB may guess for a CSV column. Without dates and times: a column holding only "inf" would
# be guessed a DATE (infinity); timestamps and dates are parsed from strings by the adapters. HUGEINT keeps
# integers beyond int64 exact, so that they are reported as such instead of read as imprecise doubles.
DUCKDB_CSV_TYPES = ["BIGINT", "HUGEINT", "DOUBLE", "VARCHAR"]


def read_table(con: ibis.BaseBackend, path: Path, what: str, csv_types: Mapping[str, str] | None = None) -> ir.Table:
    """Read a Parquet/CSV file or a directory of them; ``what`` names the file's role in errors.

    ``csv_types``: column -> Ibis type for CSV columns whose type must not be guessed (e.g. ids lists).
    """
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; check the path in the config")
    files = _directory_files(path) if path.is_dir() else [path]
    kind = _kind(files[0])
    if kind == "parquet":
        return _read_parquet(con, path, files)
    return read_csv_files(con, files, csv_types, single=not path.is_dir())


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .csv)")


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _directory_files(root: Path) -> list[Path]:
    """The data files under ``root``, sorted; one format; the same Hive partition keys for every file."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and _visible(p, root) and p.name.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES))
    if not files:
        raise DataError(
            f"{root}: no .parquet or .csv files in this directory (or in Hive partition folders such as "
            "dt=2024-03-01/); point the config at the data files"
        )
    kinds = {_kind(p): p for p in files}
    if len(kinds) > 1:
        raise DataError(f"{root}: holds both Parquet ({kinds['parquet']}) and CSV ({kinds['csv']}) files; keep one format")
    keys = {p: _partition_keys(p, root) for p in files}
    first = files[0]
    for path in files[1:]:
        if keys[path] != keys[first]:
            raise DataError(
                f"{path}: Hive partition folders {keys[path] or 'none'} differ from {first}'s {keys[first] or 'none'}; "
                "every file of a directory must sit at the same partition depth"
            )
    return files


def _partition_keys(path: Path, root: Path) -> list[str]:
    return [part.split("=", 1)[0] for part in path.relative_to(root).parts[:-1] if "=" in part]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_parquet(con: ibis.BaseBackend, root: Path, files: list[Path]) -> ir.Table:
    """Check every file's footer (schema and row count: cheap), then let the engine read them."""
    schemas, rows = [], 0
    for path in files:
        try:
            meta = pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            why = "is empty (0 bytes)" if path.stat().st_size == 0 else f"is not a readable Parquet file ({_first_line(exc)})"
            raise DataError(f"{path}: {why}; it is truncated or not Parquet (an interrupted copy or export?): write it again") from None
        schemas.append(meta.schema.to_arrow_schema())
        rows += meta.num_rows
    _same_columns(files, [{f.name: str(f.type) for f in schema} for schema in schemas])
    if rows == 0:
        raise DataError(f"{root}: no rows (the Parquet data has columns but no rows)")
    if con.name == "pyspark":  # Spark discovers Hive partitions itself and skips _/. files, like _directory_files
        return con.read_parquet(str(root))
    hive = root.is_dir() and bool(_partition_keys(files[0], root))
    return con.read_parquet([str(p) for p in files], hive_partitioning=hive)


def _same_columns(files: Sequence[Path], schemas: Sequence[Mapping[str, str]]) -> None:
    """Every file has the first file's columns (in any order) with the same types; else name both and the column."""
    first, reference = files[0], schemas[0]
    for path, schema in zip(files[1:], schemas[1:], strict=True):
        missing = [c for c in reference if c not in schema]
        extra = [c for c in schema if c not in reference]
        if missing or extra:
            column, where = (missing[0], f"missing here but present in {first}") if missing else (extra[0], f"present here but not in {first}")
            raise DataError(f"{path}: column '{column}' is {where}; the files of one source must share one schema")
        for column, dtype in reference.items():
            if dtype != "?" and schema[column] != "?" and schema[column] != dtype:
                raise DataError(
                    f"{path}: column '{column}' has type {schema[column]} here but {dtype} in {first}; "
                    "the files of one source must share one schema"
                )


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.name.lower().endswith(".gz") else path.open(newline="")


def _csv_header(path: Path) -> tuple[list[str], bool]:
    """The header's column names and whether a data row follows (without reading the whole file)."""
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t" if ".tsv" in path.name.lower() else ",")
        header = next(reader, [])
        has_row = any(any(cell.strip() for cell in row) for row, _ in zip(reader, range(1), strict=False))
    return header, has_row


def read_csv_files(
    con: ibis.BaseBackend, files: Sequence[Path], csv_types: Mapping[str, str] | None = None, single: bool = True
) -> ir.Table:
    """Read CSV files of one layout as one table.

    One file (``single``) must have a header and rows. In a directory, 0-byte and header-only files (Spark
    writes them for empty partitions) hold no rows and are skipped; the others must share their columns.
    """
    with_rows, headers = [], []
    for path in files:
        header, has_row = (_csv_header(path) if path.stat().st_size else ([], False))
        if not has_row:
            if single:
                what = "is empty (0 bytes)" if not header else "has a header but no rows"
                raise DataError(f"{path}: no rows: the file {what}")
            continue
        with_rows.append(path)
        headers.append({name: "?" for name in header})
    if not with_rows:
        raise DataError(f"{files[0].parent}: no rows: every CSV file is empty or holds only a header")
    _same_columns(with_rows, headers)
    paths = [str(p) for p in with_rows]
    types = dict(csv_types or {})
    if con.name == "pyspark":
        table = con.read_csv(paths, **SPARK_CSV_OPTIONS)
        return table.mutate(**{c: table[c].cast(t) for c, t in types.items() if c in table.schema()})
    present = set(headers[0])
    return con.read_csv(
        paths,
        types={c: t for c, t in types.items() if c in present},
        union_by_name=len(paths) > 1,
        auto_type_candidates=DUCKDB_CSV_TYPES,
    )
