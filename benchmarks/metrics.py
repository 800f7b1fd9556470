"""Benchmark: all seed metrics on a played re-ranking set of 1M users (mean list length 30, ~30M rows).

Measures wall time and peak memory (numpy allocations traced by ``tracemalloc``, plus the process's peak
RSS) of ``ranking_metrics`` on the full input, with continuous scores and with heavily tied scores, and the
speed ratio against the per-user reference loop of ``tests/test_metrics.py`` (scikit-learn for auc/map)
on the same 100,000-user input. Goals (2 cores): all metrics for 30M rows in under 20 s; >= 50x the loop.

    python benchmarks/metrics.py [--users 1000000] [--loop-users 100000] [--out benchmarks/results/metrics.json]

``--loop-users`` times the reference loop on that many users; when it is smaller than ``--ratio-users`` the
loop time is extrapolated linearly to ``--ratio-users`` and the JSON says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from twotower.evaluate.metrics import ranking_metrics

ROOT = Path(__file__).resolve().parents[1]


def load_reference():
    spec = importlib.util.spec_from_file_location("metrics_reference", ROOT / "tests" / "test_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_metrics


def make_input(n_users: int, mean_len: int, seed: int, ties: bool):
    """Users 0..n-1 with geometric list lengths (>= 2, mean ``mean_len``), per-user positive rates in
    [0.1, 0.9], item ids in [0, 200000), rows shuffled. ``ties``: scores on 20 levels (popularity-like)."""
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(1.0 / (mean_len - 1), n_users) + 1
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    rates = np.repeat(rng.uniform(0.1, 0.9, n_users), lengths)
    labels = (rng.random(len(users)) < rates).astype(np.int8)
    del rates
    items = rng.integers(0, 200_000, len(users))
    scores = rng.integers(0, 20, len(users)).astype(np.float64) if ties else rng.random(len(users))
    perm = rng.permutation(len(users))
    return users[perm], items[perm], labels[perm], scores[perm]


def measure(users, items, labels, scores) -> dict:
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    result = ranking_metrics(users, items, labels, scores)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    input_bytes = sum(a.nbytes for a in (users, items, labels, scores))
    return {
        "rows": len(users),
        "users": result.n_users_input,
        "evaluated_users": result.n_users,
        "wall_s": round(wall, 3),
        "peak_mem_mib_above_inputs": round(peak / 2**20, 1),
        "input_mib": round(input_bytes / 2**20, 1),
        "metrics": result.as_dict(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--mean-len", type=int, default=30)
    parser.add_argument("--ratio-users", type=int, default=100_000)
    parser.add_argument("--loop-users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ties", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "metrics.json")
    args = parser.parse_args(argv)

    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "goals": {"full_wall_s_under": 20, "speedup_at_least": 50},
    }
    print(f"generating {args.users:,} users (mean list length {args.mean_len}) ...", flush=True)
    data = make_input(args.users, args.mean_len, args.seed, ties=False)
    full = measure(*data)
    report["full_continuous"] = full
    print(f"all metrics, {full['rows']:,} rows, continuous scores: {full['wall_s']:.2f} s, "
          f"peak {full['peak_mem_mib_above_inputs']:.0f} MiB above inputs", flush=True)  # fmt: skip

    # the same input restricted to its first ratio_users users
    users, items, labels, scores = data
    sub = users < args.ratio_users
    small = tuple(a[sub] for a in data)
    del data, users, items, labels, scores, sub
    vec = measure(*small)
    vec_times = [vec["wall_s"]]
    for _ in range(2):  # small input: best of three
        t0 = time.perf_counter()
        ranking_metrics(*small)
        vec_times.append(time.perf_counter() - t0)
    reference_metrics = load_reference()
    loop_users = min(args.loop_users, args.ratio_users)
    loop_input = small if loop_users == args.ratio_users else tuple(a[small[0] < loop_users] for a in small)
    print(f"reference loop on {loop_users:,} users ({len(loop_input[0]):,} rows) ...", flush=True)
    t0 = time.perf_counter()
    ref = reference_metrics(*loop_input)
    loop_s = time.perf_counter() - t0
    loop_full_s = loop_s * args.ratio_users / loop_users
    if loop_users == args.ratio_users:  # same input: the results must agree
        got = vec["metrics"]
        worst = max(abs(got[k] - v) for k, v in ref.items() if isinstance(v, float))
        report["max_abs_difference_vs_reference"] = worst
    report["speed_ratio"] = {
        "users": args.ratio_users,
        "rows": len(small[0]),
        "vectorised_s": round(min(vec_times), 4),
        "loop_s": round(loop_full_s, 2),
        "loop_timed_users": loop_users,
        "loop_extrapolated": loop_users != args.ratio_users,
        "ratio": round(loop_full_s / min(vec_times), 1),
    }
    print(f"speed ratio on {args.ratio_users:,} users: loop {loop_full_s:.1f} s / vectorised "
          f"{min(vec_times):.3f} s = {report['speed_ratio']['ratio']:.0f}x", flush=True)  # fmt: skip
    del small, loop_input

    if not args.skip_ties:
        ties = measure(*make_input(args.users, args.mean_len, args.seed + 1, ties=True))
        report["full_ties"] = ties
        print(f"all metrics, {ties['rows']:,} rows, 20 score levels (ties): {ties['wall_s']:.2f} s, "
              f"peak {ties['peak_mem_mib_above_inputs']:.0f} MiB above inputs", flush=True)  # fmt: skip

    report["peak_rss_mib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["goals_met"] = {
        "full_wall_s": full["wall_s"] < 20,
        "speedup": report["speed_ratio"]["ratio"] >= 50,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
