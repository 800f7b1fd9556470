"""Run directories: created fresh, marked with their state, refused by readers when not completed.

``runs/<config name>/<timestamp>/status.json`` says ``running`` from the moment the directory exists,
then ``completed`` (every experiment completed) or ``failed`` (some experiment failed; the others and the
tables are still written). Each ``experiment_<id>/status.json`` does the same for one experiment, so that
``--resume`` knows what is done. A run killed mid-way keeps ``running``: anything that reads runs (the
report, ``compare``, the index, serving) refuses or flags it instead of trusting half its files.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from twotower.io import write_json

STATUS = "status.json"
COMPLETED, FAILED, RUNNING, TRAINED = "completed", "failed", "running", "trained"


class RunError(ValueError):
    """A run directory that cannot be used for what was asked (missing, interrupted, failed)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_run_dir(root: Path, name: str) -> Path:
    """``root/name/<timestamp>``, created fresh and marked running: a run never writes into an earlier
    run's directory."""
    if root.exists() and not root.is_dir():
        raise RunError(f"--out {root} is a file; choose a directory")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = root / name / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create a run directory under {root} ({exc.strerror or exc}); choose a writable --out") from None
        write_status(path, RUNNING, started=now())
        return path
    raise RunError(f"could not create a fresh run directory under {root / name}")


def read_status(directory: Path) -> dict:
    """The directory's ``status.json``; ``{"state": "missing"}`` without one, ``unreadable`` if cut short."""
    path = Path(directory) / STATUS
    if not path.exists():
        return {"state": "missing"}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"state": "unreadable"}


def write_status(directory: Path, state: str, **info) -> None:
    """Set ``state`` (keeping earlier keys such as ``started``), atomically."""
    previous = read_status(directory)
    previous = {} if previous.get("state") in ("missing", "unreadable") else previous
    write_json(Path(directory) / STATUS, {**previous, "state": state, **info})


def require_run(directory: Path, allow_failed: bool = False) -> dict:
    """The status of a run directory that may be read; ``RunError`` naming the state otherwise.

    A failed run is accepted with ``allow_failed`` (its completed experiments are usable)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunError(f"{directory} is not a run directory")
    status = read_status(directory)
    state = status.get("state")
    if state == COMPLETED or (state == FAILED and allow_failed):
        return status
    if state == "missing" and (directory / "summary.json").exists():
        return {"state": COMPLETED, "legacy": True}  # written before runs carried a status
    hint = {
        RUNNING: "it was interrupted or is still running; finish it with `twotower run --resume DIR`",
        FAILED: "some experiment failed (see its error.txt)",
    }.get(state, "it has no status.json; is it a twotower run directory?")
    raise RunError(f"{directory} is not a completed run (state: {state}): {hint}")
