"""Progress display for people: live bars on a terminal, one line per finished stage otherwise.

Bars that redraw are useful on a terminal and noise in a log file (CI logs would fill with hundreds of bar
lines), so when stderr is not a terminal a bar shows nothing and a ``Stages`` display prints one line per
finished stage with its wall time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def is_terminal() -> bool:
    return sys.stderr.isatty()


def bar(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True, **kw) -> Iterator[T]:
    """A tqdm bar over ``iterable`` on a terminal; the bare iterable (no output) otherwise or when disabled."""
    return tqdm(iterable, desc=desc, total=total, disable=not (enabled and is_terminal()), **kw)


def say(message: str, enabled: bool = True) -> None:
    """One line for people (stdout), written so that it does not break a live bar."""
    if enabled:
        tqdm.write(message)


class Stages:
    """Named stages of a job: a bar on a terminal, one ``name: stage (s)`` line per stage otherwise.

    Calling the object with a stage name marks that stage finished; ``seconds`` keeps each one's wall time.
    """

    def __init__(self, name: str, stages: Sequence[str], enabled: bool = True) -> None:
        self.name, self.enabled = name, enabled
        self.bar = tqdm(total=len(stages), desc=name, unit="step", disable=not (enabled and is_terminal()))
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now
        if self.bar.disable:
            if self.enabled:
                print(f"{self.name}: {stage} ({self.seconds[stage]:.1f} s)", file=sys.stderr, flush=True)
        else:
            self.bar.set_postfix_str(stage)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
