"""Benchmark: catalog evaluation of 10,000 users over 1,000,000 items (synthetic, seeded).

Item vectors ``(n, 65)`` float32 (64 Gaussian dimensions and a bias column), user queries with a constant 1
in the bias column; each user excludes about 50 seen items (Poisson) and has 1 + Poisson(2) targets among
the unseen items; training-window plays are heavy-tailed (a third of the items never played); content
vectors ``(n, 64)`` for diversity. Measures: exact index build, exact search of the top 500 with
exclusions, HNSW build (library defaults) and the same search, HNSW recall@100 against exact (on
``--recall-queries`` queries without exclusions, and on every user's excluded search; optionally at
several efSearch values), the catalog metrics (ks 10/50/100/500, two tails, coverage / gini / popularity /
diversity, per-user table), and the process's peak RSS. Writes ``benchmarks/results/retrieval.json``
and prints one line per step.

    python benchmarks/retrieval.py [--items 1000000] [--users 10000] [--skip-hnsw]
                                   [--ef-search-sweep 256 512 1024] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from twotower.io import write_json
from twotower.retrieval.index import ItemIndex, hnsw_recall
from twotower.retrieval.metrics import catalog_metrics, tail_item_sets
from twotower.retrieval.sets import ItemSets
from twotower.retrieval.threads import default_threads

ROOT = Path(__file__).resolve().parents[1]


def make_data(n_items: int, n_users: int, d: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_items).astype(np.int64) * 3 + 1  # unsorted, with gaps
    vectors = rng.standard_normal((n_items, d), dtype=np.float32)
    vectors[:, -1] *= 0.5  # item bias
    queries = rng.standard_normal((n_users, d), dtype=np.float32)
    queries[:, -1] = 1.0
    n_seen = rng.poisson(50, n_users)
    seen_pos = rng.integers(0, n_items, n_seen.sum())
    seen = ItemSets.from_pairs(np.repeat(np.arange(n_users), n_seen), ids[seen_pos], n_users)
    n_target = 1 + rng.poisson(2, n_users)
    target_rows = np.repeat(np.arange(n_users), n_target)
    target_pos = rng.integers(0, n_items, n_target.sum())
    # targets are unseen items: drop the (rare) draws that hit the user's seen set
    seen_keys = np.sort(np.repeat(np.arange(n_users), n_seen) * np.int64(n_items) + seen_pos)
    tk = target_rows * np.int64(n_items) + target_pos
    at = np.minimum(np.searchsorted(seen_keys, tk), len(seen_keys) - 1)
    fresh = seen_keys[at] != tk
    targets = ItemSets.from_pairs(target_rows[fresh], ids[target_pos[fresh]], n_users)
    plays = np.floor(rng.pareto(1.0, n_items) * 2).astype(np.int64)  # heavy tail, ~1/3 zero
    content = rng.standard_normal((n_items, 64), dtype=np.float32)
    return dict(
        ids=ids, vectors=vectors, queries=queries, seen=seen, targets=targets, plays=plays, content=content
    )


def timed(label: str, rows: list, fn):
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    rss = psutil.Process().memory_info().rss / 2**20
    rows.append({"step": label, "wall_s": round(wall, 2), "rss_mib_after": round(rss)})
    print(f"  {label:<38} {wall:8.2f} s   rss {rss:7.0f} MiB", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=65)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--recall-queries", type=int, default=1_000)
    parser.add_argument(
        "--ef-search-sweep",
        type=int,
        nargs="*",
        default=[],
        help="also time recall@100 at these efSearch values",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    args = parser.parse_args(argv)

    print(f"{args.users:,} users, {args.items:,} items, d = {args.d}, k = {args.k}, "
          f"{default_threads()} thread(s)", flush=True)  # fmt: skip
    load_at_start = list(os.getloadavg())  # other processes share the CPUs: the times depend on it
    steps: list[dict] = []
    data = timed(
        "generate synthetic data", steps, lambda: make_data(args.items, args.users, args.d, args.seed)
    )
    seen, targets = data["seen"], data["targets"]
    exact = timed("exact index: build", steps, lambda: ItemIndex.build(data["ids"], data["vectors"]))
    top, _ = timed(
        f"exact index: search top {args.k}", steps, lambda: exact.search(data["queries"], args.k, seen)
    )
    tails = tail_item_sets(data["ids"], data["plays"], [3, 1])
    metrics = timed(
        "catalog metrics (all, per-user table)",
        steps,
        lambda: catalog_metrics(
            top,
            targets,
            tail_items=tails,
            catalog_ids=data["ids"],
            item_plays=data["plays"],
            item_vectors=data["content"],
            per_user=True,
        ),
    )
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": default_threads(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_after_exact": list(os.getloadavg()),
        },
        "input": {
            "items": args.items,
            "users": args.users,
            "d": args.d,
            "k": args.k,
            "seen_items": int(len(seen.items)),
            "targets": int(len(targets.items)),
            "seed": args.seed,
        },
        "metrics": metrics.as_dict(),
    }
    report["steps"] = steps
    write_json(args.out, report)  # the exact part, in case the HNSW build is interrupted
    if not args.skip_hnsw:
        approx = timed(
            "hnsw index: build (M 32, efC 200)",
            steps,
            lambda: ItemIndex.build(data["ids"], data["vectors"], "hnsw"),
        )
        top_h, _ = timed(
            f"hnsw index: search top {args.k}", steps, lambda: approx.search(data["queries"], args.k, seen)
        )
        sample = data["queries"][: args.recall_queries]
        recall = timed(
            f"hnsw recall@100 ({len(sample):,} queries)",
            steps,
            lambda: hnsw_recall(exact, approx, sample, k=100),
        )
        # recall@100 of the excluded searches: |hnsw top 100 ∩ exact top 100| / |exact top 100|
        a, b = top[:, :100], top_h[:, :100]
        inter = [
            len(np.intersect1d(x[x >= 0], y[y >= 0])) / max(1, int((x >= 0).sum()))
            for x, y in zip(a, b, strict=True)
        ]
        report["hnsw"] = {
            "params": approx.params,
            "recall@100_vs_exact": round(recall, 4),
            "recall@100_vs_exact_with_exclusions": round(float(np.mean(inter)), 4),
        }
        print(f"  hnsw recall@100 vs exact: {recall:.4f} ({np.mean(inter):.4f} with exclusions)", flush=True)
        sweep = []
        for ef in args.ef_search_sweep:  # top 100 of the sample queries, no exclusions
            approx.set_ef_search(ef)
            t0 = time.perf_counter()
            approx.search(sample, 100)
            wall = time.perf_counter() - t0
            rec = hnsw_recall(exact, approx, sample, k=100)
            sweep.append(
                {
                    "ef_search": ef,
                    "recall@100": round(rec, 4),
                    "search_ms_per_query": round(1e3 * wall / len(sample), 3),
                }
            )
            print(
                f"  efSearch {ef:5d}: recall@100 {rec:.4f}, {1e3 * wall / len(sample):.2f} ms/query",
                flush=True,
            )
        report["hnsw"]["ef_search_sweep"] = sweep
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    print(f"  peak RSS {report['peak_rss_mib']} MiB")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
