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
from collections.abc import Mapping, Sequence
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.parquet as pq

from twotower.data.engine import engine_uri, spark_session
from twotower.data.storage import Location, locate, text_lines
from twotower.data.validate import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
# Spark's CSV reader parses only Java's spellings ("NaN", "Infinity") as numbers; these are the ones that
# pandas, NumPy and DuckDB write. (DuckDB's reader knows both.)
SPARK_CSV_OPTIONS = {"nanValue": "nan", "positiveInf": "inf", "negativeInf": "-inf"}
# The types DuckDB may guess for a CSV column. Without dates and times: a column holding only "inf" would
# be guessed a DATE (infinity); timestamps and dates are parsed from strings by the adapters. HUGEINT keeps
# integers beyond int64 exact, so that they are reported as such instead of read as imprecise doubles.
# Spark's guesses are mapped onto the same set (see ``_spark_type``), so both engines type a file alike.
DUCKDB_CSV_TYPES = ["BIGINT", "HUGEINT", "DOUBLE", "VARCHAR"]


def read_table(
    con: ibis.BaseBackend, path: str | Path | Location, what: str, csv_types: Mapping[str, str] | None = None
) -> ir.Table:
    """Read a Parquet/CSV file or a directory of them (a local path or a URI); ``what`` names the file's
    role in errors.

    ``csv_types``: column -> Ibis type for CSV columns whose type must not be guessed (e.g. ids lists).
    """
    location = locate(path)
    if not location.exists():
        raise DataError(f"{what} {location} does not exist; check the path in the config")
    directory = location.is_dir()
    files = _directory_files(location) if directory else [location]
    kind = _kind(files[0])
    if kind == "parquet":
        return _read_parquet(con, location, files)
    return read_csv_files(con, files, csv_types, single=not directory)


def _kind(location: Location) -> str:
    name = location.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(f"{location}: unsupported file type {Path(name).suffix!r} (expected .parquet or .csv)")


def _visible(relative: str) -> bool:
    return not any(part.startswith((".", "_")) for part in relative.split("/"))


def _directory_files(root: Location) -> list[Location]:
    """The data files under ``root``, sorted; one format; the same Hive partition keys for every file."""
    suffixes = PARQUET_SUFFIXES + CSV_SUFFIXES
    files = [f for f in root.files() if _visible(root.relative(f)) and f.name.lower().endswith(suffixes)]
    if not files:
        raise DataError(
            f"{root}: no .parquet or .csv files in this directory (or in Hive partition folders such as "
            "dt=2024-03-01/); point the config at the data files"
        )
    kinds = {_kind(f): f for f in files}
    if len(kinds) > 1:
        raise DataError(f"{root}: holds both Parquet ({kinds['parquet']}) and CSV ({kinds['csv']}) files; keep one format")
    first_keys = _partition_keys(files[0], root)
    for location in files[1:]:
        keys = _partition_keys(location, root)
        if keys != first_keys:
            raise DataError(
                f"{location}: Hive partition folders {keys or 'none'} differ from {files[0]}'s {first_keys or 'none'}; "
                "every file of a directory must sit at the same partition depth"
            )
    return files


def _partition_keys(location: Location, root: Location) -> list[str]:
    return [part.split("=", 1)[0] for part in root.relative(location).split("/")[:-1] if "=" in part]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_parquet(con: ibis.BaseBackend, root: Location, files: list[Location]) -> ir.Table:
    """Check every file's footer (schema and row count: cheap), then let the engine read them."""
    schemas, rows = [], 0
    for location in files:
        try:
            with location.open_file() as handle:
                meta = pq.read_metadata(handle)
        except (pa.ArrowException, OSError) as exc:
            why = "is empty (0 bytes)" if location.size() == 0 else f"is not a readable Parquet file ({_first_line(exc)})"
            raise DataError(f"{location}: {why}; it is truncated or not Parquet (an interrupted copy or export?): write it again") from None
        schemas.append(meta.schema.to_arrow_schema())
        rows += meta.num_rows
    _same_columns(files, [{f.name: str(f.type) for f in schema} for schema in schemas])
    if rows == 0:
        raise DataError(f"{root}: no rows (the Parquet data has columns but no rows)")
    if con.name == "pyspark":  # Spark discovers Hive partitions itself and skips _/. files, like _directory_files
        return con.read_parquet(engine_uri(root, con.name))
    hive = root.is_dir() and bool(_partition_keys(files[0], root))
    return con.read_parquet([engine_uri(f, con.name) for f in files], hive_partitioning=hive)


def _same_columns(files: Sequence[Location], schemas: Sequence[Mapping[str, str]]) -> None:
    """Every file has the first file's columns (in any order) with the same types; else name both and the column."""
    first, reference = files[0], schemas[0]
    for location, schema in zip(files[1:], schemas[1:], strict=True):
        missing = [c for c in reference if c not in schema]
        extra = [c for c in schema if c not in reference]
        if missing or extra:
            column, where = (missing[0], f"missing here but present in {first}") if missing else (extra[0], f"present here but not in {first}")
            raise DataError(f"{location}: column '{column}' is {where}; the files of one source must share one schema")
        for column, dtype in reference.items():
            if dtype != "?" and schema[column] != "?" and schema[column] != dtype:
                raise DataError(
                    f"{location}: column '{column}' has type {schema[column]} here but {dtype} in {first}; "
                    "the files of one source must share one schema"
                )


def _csv_header(location: Location) -> tuple[list[str], bool]:
    """The header's column names and whether a data row follows (without reading the whole file)."""
    name = location.name.lower()
    with text_lines(location, gzip=name.endswith(".gz")) as handle:
        reader = csv.reader(handle, delimiter="\t" if ".tsv" in name else ",")
        header = next(reader, [])
        has_row = any(any(cell.strip() for cell in row) for row, _ in zip(reader, range(1), strict=False))
    return header, has_row


def read_csv_files(
    con: ibis.BaseBackend, files: Sequence[Location], csv_types: Mapping[str, str] | None = None, single: bool = True
) -> ir.Table:
    """Read CSV files of one layout as one table.

    One file (``single``) must have a header and rows. In a directory, 0-byte and header-only files (Spark
    writes them for empty partitions) hold no rows and are skipped; the others must share their columns.
    """
    with_rows, headers = [], []
    for location in files:
        header, has_row = (_csv_header(location) if location.size() else ([], False))
        if not has_row:
            if single:
                what = "is empty (0 bytes)" if not header else "has a header but no rows"
                raise DataError(f"{location}: no rows: the file {what}")
            continue
        with_rows.append(location)
        headers.append(header)
    if not with_rows:
        raise DataError(f"{files[0].parent}: no rows: every CSV file is empty or holds only a header")
    _same_columns(with_rows, [{name: "?" for name in header} for header in headers])
    types = dict(csv_types or {})
    if con.name == "pyspark":
        return _spark_csv(con, with_rows, headers, types)
    present = set(headers[0])
    return con.read_csv(
        [engine_uri(f, con.name) for f in with_rows],
        types={c: t for c, t in types.items() if c in present},
        union_by_name=len(with_rows) > 1,
        auto_type_candidates=DUCKDB_CSV_TYPES,
    )


def _spark_type(field, declared: Mapping[str, str]):
    """The Spark type a CSV column is read as: the declared one, else Spark's guess mapped onto DuckDB's
    candidates (integers -> bigint, integers beyond it stay decimal(n, 0), fractions -> double, anything
    else, dates and booleans included, -> string)."""
    from ibis.backends.pyspark.datatypes import PySparkType
    from pyspark.sql import types as st

    if field.name in declared:
        return PySparkType.from_ibis(dt.dtype(declared[field.name]))
    guessed = field.dataType
    if isinstance(guessed, st.ByteType | st.ShortType | st.IntegerType | st.LongType):
        return st.LongType()
    if isinstance(guessed, st.DecimalType):
        return guessed if guessed.scale == 0 else st.DoubleType()
    if isinstance(guessed, st.FloatType | st.DoubleType):
        return st.DoubleType()
    return st.StringType()


def _spark_csv(con: ibis.BaseBackend, files: Sequence[Location], headers: Sequence[list[str]], declared: Mapping[str, str]) -> ir.Table:
    """CSV files on Spark with a declared schema: Spark guesses the types in one pass over the files, the
    guesses are mapped onto DuckDB's (``_spark_type``), and the files are read with that schema, the
    header checked against it. Files whose columns come in another order are read apart and joined by name."""
    from pyspark.sql import types as st

    session = spark_session(con)

    def reader():  # a DataFrameReader is mutable: a fresh one per read
        return session.read.options(header=True, **SPARK_CSV_OPTIONS)

    paths = [engine_uri(f, con.name) for f in files]
    frame = None
    for order in dict.fromkeys(tuple(h) for h in headers):
        group = [p for p, h in zip(paths, headers, strict=True) if tuple(h) == order]
        guessed = reader().option("inferSchema", True).csv(group).schema
        schema = st.StructType([st.StructField(f.name, _spark_type(f, declared), True) for f in guessed.fields])
        part = reader().schema(schema).option("enforceSchema", False).csv(group)
        frame = part if frame is None else frame.unionByName(part)
    name = ibis.util.gen_name("read_csv")
    frame.createOrReplaceTempView(name)
    return con.table(name)
