"""Config files as plain TOML tables: ``extends`` chains, merging, ``--set`` overrides, writing.

This module knows nothing of the typed models (``twotower.config`` validates what it returns). A config
is read as a list of *sources*, lowest priority first: the furthest parent file, ..., the file itself, then
each ``--set`` override. Each source keeps its own keys, so that a validation error can name the file (or
the ``--set``) where the offending key is written. Merging rules:

- tables are merged key by key, recursively (``[model]`` in a child changes only the keys it names);
- any other value, lists and the ``[[experiments]]`` array of tables included, is replaced, never appended.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from twotower.io import write_text


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ConfigSource:
    """Keys written in one place: ``name`` is a file path, ``--set KEY=VALUE`` or ``--data``."""

    name: str
    raw: dict[str, Any]


# Keys holding paths; a relative path is relative to the directory of the file that writes it.
PATH_KEYS = (
    ("data", "path"),
    ("data", "items_path"),
    ("data", "users_path"),
    ("data", "duckdb", "temp_directory"),
    ("content", "cache_dir"),
    ("content", "blip", "checkpoint"),
    ("content", "blip", "media_dir"),
    ("content", "precomputed", "path"),
)


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: object) -> bool:
    """Whether ``value`` is a string with a scheme (``s3a://bucket/key``, ``hdfs://nn/x``, ``file:///x``):
    a location the data engine resolves, never a local path to resolve (``Path`` would fold ``//``)."""
    return isinstance(value, str) and _URI.match(value) is not None


def resolve_paths(raw: dict, base: Path) -> None:
    """Make the relative paths of ``PATH_KEYS`` in ``raw`` absolute against ``base``, in place; URIs are
    left as written."""
    for keys in PATH_KEYS:
        node: Any = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str) and not is_uri(node[keys[-1]]):
            path = Path(node[keys[-1]]).expanduser()
            node[keys[-1]] = str(path if path.is_absolute() else (base / path).resolve())


def read_toml(path: Path) -> dict[str, Any]:
    """One TOML file as a dict; a missing or invalid file is a ``ConfigError`` naming it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None


def read_chain(path: str | Path) -> list[ConfigSource]:
    """``path`` and the files it ``extends`` (transitively), the furthest parent first.

    ``extends`` is relative to the file that writes it. Each source's relative paths are resolved against
    its own file's directory, and its ``extends`` key is removed.
    """
    path = Path(path)
    chain: list[ConfigSource] = []
    seen: list[Path] = []
    while True:
        if path.resolve() in seen:
            names = " -> ".join([s.name for s in reversed(chain)] + [str(path)])
            raise ConfigError(f"config files extend each other in a cycle: {names}")
        seen.append(path.resolve())
        if not path.is_file() and chain:
            names = " -> ".join(s.name for s in reversed(chain))
            raise ConfigError(f"config {chain[0].name} extends {path}, which does not exist (chain: {names} -> {path})")
        raw = read_toml(path)
        parent = raw.pop("extends", None)
        resolve_paths(raw, path.resolve().parent)
        chain.insert(0, ConfigSource(str(path), raw))
        if parent is None:
            return chain
        if not isinstance(parent, str):
            raise ConfigError(f"config {path}: 'extends' must be a file name (a string), got {parent!r}")
        # normpath only tidies the name shown in messages ("configs/series/../x.toml" -> "configs/x.toml")
        path = Path(os.path.normpath(path.parent / parent))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: tables merged recursively, everything else replaced (new dict)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_sources(sources: Iterable[ConfigSource]) -> dict[str, Any]:
    """All sources merged, later ones winning."""
    merged: dict[str, Any] = {}
    for source in sources:
        merged = merge(merged, source.raw)
    return merged


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse_value(text: str) -> Any:
    """``text`` as a TOML value (``5``, ``0.8``, ``true``, ``["a", "b"]``, ``"x"``); otherwise the string."""
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text.strip()
    # a value that smuggles in a second key ("5\nx = 1") is not one value: keep the text as it is
    return document["value"] if list(document) == ["value"] else text.strip()


def set_source(text: str, base: Path | None = None) -> ConfigSource:
    """One ``--set section.key=value`` as a source; relative paths in it are relative to ``base`` (cwd)."""
    key, sep, value = text.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(_BARE_KEY.fullmatch(k) for k in keys):
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set train.epochs=5")
    if keys[0] == "extends":
        raise ConfigError(f"--set {text!r}: 'extends' is read from the file and cannot be set")
    raw: dict[str, Any] = {keys[-1]: parse_value(value)}
    for part in reversed(keys[:-1]):
        raw = {part: raw}
    resolve_paths(raw, base or Path.cwd())
    return ConfigSource(f"--set {text}", raw)


def write_toml(path: str | Path, raw: dict[str, Any], header: str = "") -> Path:
    """Write ``raw`` as TOML (``header`` lines become comments) atomically; returns ``path``."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return write_text(path, comment + tomli_w.dumps(toml_ready(raw)))


def toml_ready(value: Any) -> Any:
    """Paths as strings, tuples as lists, ``None`` left out (TOML has no null)."""
    if isinstance(value, dict):
        return {k: toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [toml_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables (and lists holding tables or lists) as one level: ``{"model.hidden": [256, 128],
    "experiments.0.val_date": ...}``; lists of plain values stay whole."""
    if isinstance(value, dict):
        items: Iterable = value.items()
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = enumerate(value)
    else:
        return {prefix.rstrip("."): value}
    out: dict[str, Any] = {}
    for key, child in items:
        out.update(flatten(child, f"{prefix}{key}."))
    return out
