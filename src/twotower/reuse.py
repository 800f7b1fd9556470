"""Reusing prepared data and content tables across runs whose inputs did not change.

A stage's output is stored once under ``<cache root>/<stage>/<key>/`` (the cache root is the parent of
``content.cache_dir``, ``cache/`` by default) and linked into each run directory that needs it. The key is
a SHA-256 of everything that decides the output:

- prepared data: the config sections that affect it (data, filters, label, sample weight, sampling,
  history, features, the seed, the experiment's window), the size and modification time of every input
  file, and the source code of the ``data`` package (a code change invalidates every entry);
- a content table: the prepared data's key, the ``content`` section, the size and modification time of
  every file the encoder reads besides the items (checkpoint, media, precomputed vectors, the e5 weights),
  the seed and the ``content`` code.

A stage output is published to the cache only when complete (copied under a temporary name, then renamed),
so an interrupted run never leaves a half entry that a later run would reuse.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import twotower
from twotower.config import Config, ExperimentConfig
from twotower.content.registry import input_paths

PACKAGE = Path(twotower.__file__).parent


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _source_digest(package: str) -> str:
    """Hash of the package's source files, so that a code change invalidates what it produced."""
    h = hashlib.sha256()
    for path in sorted((PACKAGE / package).rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _file_stats(path: Path | str | None) -> list:
    """(relative name, size, mtime_ns) of a file, or of every file under a directory."""
    if isinstance(path, str):  # a URI (hdfs://, s3a://): listed through the data layer's filesystems
        from twotower.data.storage import file_stats

        return file_stats(path)
    if path is None or not path.exists():
        return [str(path), None]
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def prepare_key(cfg: Config, exp: ExperimentConfig) -> str:
    """The key of one experiment's prepared data (see the module docstring)."""
    data = cfg.data
    return _digest(
        {
            "version": twotower.__version__,
            "code": _source_digest("data"),
            "config": cfg.model_dump(
                mode="json", include={"data", "filters", "label", "sample_weight", "sampling", "history", "features", "seed"}
            ),
            "experiment": exp.model_dump(mode="json", exclude={"event_type"}),
            "files": [_file_stats(data.path), _file_stats(data.items_path), _file_stats(data.users_path)],
        }
    )


def content_key(cfg: Config, prepared_key: str) -> str:
    """The key of a content table built from the prepared data of ``prepared_key``."""
    return _digest(
        {
            "prepared": prepared_key,
            "code": _source_digest("content"),
            "content": cfg.content.model_dump(mode="json", exclude={"cache_dir"}),
            "content_files": [_file_stats(path) for path in input_paths(cfg.content)],
            "seed": cfg.seed,
        }
    )


def cache_dir(cfg: Config, stage: str, key: str) -> Path:
    return Path(cfg.content.cache_dir).parent / stage / key


def link_files(source: Path, target: Path) -> None:
    """Put every file of ``source`` into ``target`` (created), as hard links where the filesystem allows
    (no copy, no extra space; the files are never modified in place), else as copies. Directories (a
    table partitioned by day, data.partition_by_day) are linked file by file."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_dir():
            link_files(path, target / path.name)
            continue
        if not path.is_file():
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def publish(source: Path, entry: Path) -> None:
    """Store a complete stage output in the cache under ``entry``, atomically (temporary name, rename);
    an entry that appeared meanwhile (another run) is kept."""
    if entry.exists():
        return
    tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        link_files(source, tmp)
        os.replace(tmp, entry)
    except OSError:
        pass  # another run published it first, or the cache is not writable: reuse is an optimisation
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
