"""Files on a local disk or behind a URI (``file://``, ``hdfs://``, ``s3a://``, ``gs://``), through ``pyarrow.fs``.

The engines resolve input and output paths themselves (Spark through Hadoop's filesystems, DuckDB through
its own); what ``prepare`` does on the driver besides (checking that inputs exist, listing a directory,
reading a CSV header or a Parquet footer, writing ``funnel.json`` and ``prepare.json``, renaming a finished
output) goes through :class:`Location`, so that it reaches the same files as the engine.

A local path stays a :class:`pathlib.Path` everywhere (messages show it as written); a string with a scheme
(``scheme://...``) is a URI and is never turned into a ``Path`` (which would fold ``s3a://b`` into ``s3a:/b``).
Hadoop's ``s3a://`` and ``s3n://`` are read through pyarrow's S3 filesystem (the same bucket and key).
HDFS needs a Hadoop client on the driver (libhdfs, ``CLASSPATH``), as pyarrow documents.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip as gzip_module
import io
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

from twotower.config_files import is_uri
from twotower.data.validate import DataError
from twotower.io import json_ready

# Hadoop's names for S3 -> the scheme pyarrow knows for the same bucket and key
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}
# Filesystems whose rename is atomic (and cheap for directories): outputs are written under a temporary
# name and renamed. Object stores copy on "rename": outputs are written in place, prepare.json marks them.
RENAMING = ("local", "hdfs")


@dataclass(frozen=True)
class Location:
    """A file or directory: ``uri`` as the engines and messages see it, ``fs`` and ``path`` to reach it here."""

    uri: str
    fs: pafs.FileSystem
    path: str

    def __str__(self) -> str:
        return self.uri

    @property
    def local(self) -> bool:
        return self.fs.type_name == "local"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def __truediv__(self, name: str) -> Location:
        uri = str(Path(self.uri) / name) if not is_uri(self.uri) else f"{self.uri.rstrip('/')}/{name}"
        return Location(uri, self.fs, f"{self.path.rstrip('/')}/{name}")

    @property
    def parent(self) -> Location:
        path = posixpath.dirname(self.path.rstrip("/")) or "/"
        if not is_uri(self.uri):
            return Location(str(Path(self.uri).parent), self.fs, path)
        head, _, _ = self.uri.rstrip("/").rpartition("/")
        return Location(head if not head.endswith(":/") else head + "/", self.fs, path)

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def size(self) -> int:
        return int(self.info().size or 0)

    def relative(self, child: Location) -> str:
        """``child``'s path below this directory (``a/b.csv``)."""
        return posixpath.relpath(child.path, self.path.rstrip("/") or "/")

    def files(self, recursive: bool = True) -> list[Location]:
        """Files below this directory, sorted by path."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=recursive))
        return [self._child(info.path) for info in sorted(infos, key=lambda i: i.path) if info.type == pafs.FileType.File]

    def entries(self) -> list[Location]:
        """Files and directories directly in this directory."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        return [self._child(info.path) for info in sorted(infos, key=lambda i: i.path)]

    def glob(self, pattern: str) -> list[Location]:
        """Files directly in this directory whose name matches ``pattern`` (``log_standard_*.csv``), sorted."""
        return [f for f in self.files(recursive=False) if fnmatch.fnmatchcase(f.name, pattern)]

    def _child(self, path: str) -> Location:
        return self / posixpath.relpath(path, self.path.rstrip("/") or "/")

    def open(self) -> IO[bytes]:
        """The file's bytes as stored (no decompression by suffix)."""
        return self.fs.open_input_stream(self.path, compression=None)

    def open_file(self) -> pa.NativeFile:
        """A random-access file (for Parquet footers)."""
        return self.fs.open_input_file(self.path)

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def remove(self) -> None:
        """Remove this file or directory (with its contents); nothing when it does not exist."""
        info = self.info()
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type != pafs.FileType.NotFound:
            self.fs.delete_file(self.path)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as out:
            out.write(data)

    def read_text(self) -> str:
        with self.open() as handle:
            return handle.read().decode("utf-8")

    def temporary(self) -> Location:
        """A sibling name for writing this output before the rename (same directory, hidden, keeps the suffix)."""
        stem, dot, suffix = self.name.partition(".")
        return self.parent / f".{stem}.{uuid.uuid4().hex[:12]}.tmp{dot}{suffix}"


def locate(value: str | Path | Location) -> Location:
    """The :class:`Location` of a local path or a URI; an unknown scheme or unreachable store is a DataError."""
    if isinstance(value, Location):
        return value
    if not is_uri(value):
        path = Path(value).expanduser().absolute()
        return Location(str(Path(value).expanduser()), pafs.LocalFileSystem(), path.as_posix())
    uri = str(value)
    scheme = uri.split("://", 1)[0].lower()
    resolvable = f"{_SCHEME_ALIASES[scheme]}{uri[len(scheme):]}" if scheme in _SCHEME_ALIASES else uri
    try:
        fs, path = pafs.FileSystem.from_uri(resolvable)
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{uri}: cannot reach this location from here ({first}); check the URI and the credentials") from None
    return Location(uri, fs, path)


def file_stats(value: str | Path) -> list:
    """(relative name, size, mtime_ns) of a file, or of every file below a directory; ``[value, None]`` when
    it does not exist (what decides whether prepared data can be reused, see ``twotower.reuse``)."""
    location = locate(value)
    info = location.info()
    if info.type == pafs.FileType.NotFound:
        return [str(value), None]
    if info.type == pafs.FileType.Directory:
        infos = location.fs.get_file_info(pafs.FileSelector(location.path, recursive=True))
        files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
        return [(posixpath.relpath(i.path, location.path), i.size, i.mtime_ns) for i in files]
    return [(location.name, info.size, info.mtime_ns)]


def write_atomic(target: Location, write: Callable[[Location], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``target`` on filesystems that rename atomically; elsewhere
    (object stores) ``write(target)`` directly. A failed write leaves nothing under either name."""
    if target.fs.type_name not in RENAMING:
        try:
            write(target)
        except BaseException:
            with contextlib.suppress(OSError):
                target.remove()
            raise
        return
    target.parent.mkdir()
    tmp = target.temporary()
    try:
        write(tmp)
        target.remove()  # the local filesystem's move does not replace a directory
        target.fs.move(tmp.path, target.path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.remove()
        raise


def write_text(target: Location, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically where the filesystem allows."""
    write_atomic(target, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def write_json(target: Location, payload: object) -> None:
    """Strict JSON (NaN and infinities as null; dates and paths as strings), indented, atomically."""
    write_text(target, json.dumps(json_ready(payload), indent=2, default=str, allow_nan=False) + "\n")


@contextlib.contextmanager
def text_lines(location: Location, gzip: bool) -> Iterator[io.TextIOWrapper]:
    """The file as text lines (``newline=""`` as the csv module wants); ``gzip``: decompress."""
    with location.open() as raw:
        stream = gzip_module.GzipFile(fileobj=raw) if gzip else raw
        yield io.TextIOWrapper(stream, encoding="utf-8", newline="")
