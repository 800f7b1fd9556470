"""The directory ``prepare`` writes: claimed with a marker, filled atomically, marked complete last.

``prepare.json`` is written first with ``"state": "running"`` and rewritten with ``"completed"`` after
every other file, so a directory can be told apart in three states:

* completed: never replaced (results are never overwritten; choose another ``--out``);
* interrupted (the process was killed, the marker still says running): refused unless ``overwrite``,
  which removes the files ``prepare`` writes and starts again;
* anything else that is not empty: refused, and never deleted (the files are not ``prepare``'s).

Every Parquet file is written under a temporary name in the same directory and renamed when complete,
so a killed ``prepare`` never leaves a truncated file under a final name. A ``prepare`` that fails with an
exception removes what it wrote (and the directory, if it created it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from pathlib import Path

import ibis.expr.types as ir

from twotower.data.prepared import MARKER
from twotower.data.validate import DataError
from twotower.io import write_atomic, write_json

OUTPUTS = ("train", "eval", "history", "items", "users", "popularity", "catalog", "retrieval_users", "retrieval_targets", "seen")
FILES = (*(f"{name}.parquet" for name in OUTPUTS), "funnel.json", MARKER)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _state(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return {"state": "unreadable"}  # a marker cut short by a crash: treated as interrupted


def claim(out_dir: Path, overwrite: bool, info: dict) -> bool:
    """Make ``out_dir`` ready for a new result and mark it running; returns whether it was created.

    Raises :class:`DataError` for a completed result, an interrupted one without ``overwrite``, a
    directory of other files, a path that is a file, or a directory that cannot be written.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file; choose a directory")
    existing = out_dir.is_dir() and any(out_dir.iterdir())
    if existing:
        if not (out_dir / MARKER).exists():
            raise DataError(
                f"{out_dir} is not empty and holds no {MARKER} (not a prepare result); choose a new or empty --out "
                "(its files are left alone)"
            )
        state = _state(out_dir)
        if state.get("state") == "completed":
            raise DataError(
                f"{out_dir} already holds prepared data (completed {state.get('finished', '?')}); choose another --out "
                "(results are never overwritten)"
            )
        if not overwrite:
            raise DataError(
                f"{out_dir} holds an interrupted prepare (started {state.get('started', '?')}, never completed); "
                "pass --overwrite to replace it, or choose another --out"
            )
        _remove_outputs(out_dir)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / MARKER, {"state": "running", "started": _now(), **info})
    except OSError as exc:
        raise DataError(f"cannot write to {out_dir} ({exc.strerror or exc}); choose a writable --out") from None
    return created


def _remove_outputs(out_dir: Path) -> None:
    """Remove what ``prepare`` writes (final names and temporary ones); leave anything else."""
    for path in out_dir.iterdir():
        temporary = path.name.startswith(".") and ".tmp." in path.name
        if path.name in FILES or temporary:
            if path.is_dir():  # Spark writes a Parquet "file" as a directory
                shutil.rmtree(path)
            else:
                path.unlink()


def release(out_dir: Path, created: bool) -> None:
    """After a failure: remove what was written, and the directory if this run created it."""
    with contextlib.suppress(OSError):
        _remove_outputs(out_dir)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def complete(out_dir: Path, info: dict) -> None:
    """Mark ``out_dir`` completed (the last write of ``prepare``)."""
    started = _state(out_dir).get("started")
    files = sorted(p.name for p in out_dir.iterdir() if p.name in FILES and p.name != MARKER)
    write_json(out_dir / MARKER, {"state": "completed", "started": started, "finished": _now(), **info, "files": files})


def write_parquet(table: ir.Table, path: Path) -> Path:
    """Execute ``table`` into ``path`` atomically (a temporary name in the same directory, then renamed)."""
    return write_atomic(path, lambda tmp: table.to_parquet(tmp))
