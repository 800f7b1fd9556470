"""FAISS's OpenMP threads: how many this process may use, and a scope that sets and restores them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import faiss

#: ``threads`` value that leaves FAISS's OpenMP setting alone: a server sets it once at start-up
PROCESS_THREADS = "process"


def default_threads() -> int:
    """The CPUs this process may run on (FAISS's OpenMP threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def omp_threads(n: int | str | None) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads (None: ``default_threads()``), then restore the previous count.

    ``PROCESS_THREADS`` changes nothing: concurrent searches of a server must not set and restore a
    process-wide value under each other's feet."""
    if n == PROCESS_THREADS:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n) if n else default_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
