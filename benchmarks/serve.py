"""Benchmark: the recommendation service on loopback under concurrent requests (k = 100).

Each scenario starts the service (``twotower.retrieval.serve.create_app`` under uvicorn, one process: the
service as ``twotower serve`` runs it, FAISS and torch at one thread per request) in a child process on a
free port, waits for ``/health``, then ``--clients`` concurrent clients (httpx2, asyncio; several values: one run each) send
``--requests`` requests (bounded also by ``--seconds``) after ``--warmup`` unmeasured ones; latency is the
client's wall time per request. The clients share the machine with the server (on the project's 2 cores
they take part of it).

- ``kuairand``: a real run directory (``--run``, ``-e``): ``GET /recommend?user_id=<a random known
  user>&k=100`` over the exact index of the catalog (7,583 items), and ``POST /recommend`` with a
  20-play history of random catalog items;
- ``synthetic``: ``--items`` (1,000,000) Gaussian item vectors (d = 65, seeded) in an HNSW index
  (``--hnsw-m`` 16, ``--ef-construction`` 64: far cheaper to build than the defaults; built once and cached
  under ``benchmarks/data/``, git-ignored), served without a model: the service's search core over
  ``--users`` synthetic users with random query vectors and about 50 seen items each (GET only). Its
  recall@100 against exact search is measured on ``--recall-queries`` of those users' queries (with
  their exclusions, as served).

Writes ``benchmarks/results/serve.json``.

    python benchmarks/serve.py --run runs/kuairand_blip_history/<timestamp> -e 2 [--requests 2000]
                               [--clients 8] [--items 1000000] [--skip-synthetic] [--skip-kuairand]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
D = 65


def synthetic_vectors(n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,), vectors (n, 65)): Gaussian, the last column a smaller item bias."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_items).astype(np.int64) * 3 + 1
    vectors = rng.standard_normal((n_items, D), dtype=np.float32)
    vectors[:, -1] *= 0.5
    return ids, vectors


def synthetic_users(ids: np.ndarray, n_users: int, seed: int):
    """(queries (U, 65) with a 1 in the bias column, seen ItemSets with Poisson(50) items per user)."""
    from twotower.retrieval.sets import ItemSets

    rng = np.random.default_rng(seed + 1)
    queries = rng.standard_normal((n_users, D), dtype=np.float32)
    queries[:, -1] = 1.0
    n_seen = rng.poisson(50, n_users)
    seen = ItemSets.from_pairs(np.repeat(np.arange(n_users), n_seen), ids[rng.integers(0, len(ids), n_seen.sum())], n_users)
    return queries, seen


def synthetic_index_dir(args) -> Path:
    return DATA / f"serve_hnsw_{args.items}_m{args.hnsw_m}_efc{args.ef_construction}_seed{args.seed}"


def prepare_synthetic(args) -> dict:
    """Build (or reuse) the cached HNSW index; measure its recall@100 against exact search (as served:
    with the users' exclusions) and the build time."""
    from twotower.retrieval.index import ItemIndex

    directory = synthetic_index_dir(args)
    ids, vectors = synthetic_vectors(args.items, args.seed)
    info: dict = {"items": args.items, "d": D, "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    if directory.exists():
        index = ItemIndex.load(directory)
        info["build_s"] = index.meta.get("build_s")
        info["cached"] = True
    else:
        t0 = time.perf_counter()
        index = ItemIndex.build(ids, vectors, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search)
        info["build_s"] = round(time.perf_counter() - t0, 1)
        info["cached"] = False
        index.save(directory, "synthetic", extra={"build_s": info["build_s"]})
    index.set_ef_search(args.ef_search)
    queries, seen = synthetic_users(ids, args.users, args.seed)
    sample = np.arange(min(args.recall_queries, args.users))
    exact = ItemIndex.build(ids, vectors)
    t0 = time.perf_counter()
    truth, _ = exact.search(queries[sample], 100, seen.take(sample))
    found, _ = index.search(queries[sample], 100, seen.take(sample))
    info["recall@100"] = round(float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(truth.tolist(), found.tolist(), strict=True)])), 4)
    info["recall_queries"] = len(sample)
    info["recall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  synthetic HNSW: {args.items:,} items, build {info['build_s']} s (cached: {info['cached']}), "
          f"recall@100 {info['recall@100']} over {len(sample)} queries", flush=True)
    return info


def synthetic_recommender(args):
    """The service's search core over the cached synthetic index, without a model."""
    from twotower.retrieval.index import ItemIndex
    from twotower.retrieval.service import CatalogItems, KnownUsers, Recommender

    index = ItemIndex.load(synthetic_index_dir(args)).set_ef_search(args.ef_search)
    ids = np.sort(index.item_ids)
    queries, seen = synthetic_users(index.item_ids, args.users, args.seed)  # the same ids as when built
    n = len(ids)
    items = CatalogItems(ids, [{"creator_id": int(i % 1000)} for i in ids], np.full(n, 10.0), np.full(n, np.nan))
    users = KnownUsers(np.arange(args.users, dtype=np.int64), queries, np.zeros(args.users, np.int64), seen, None, None)
    about = {"model": "synthetic (no model)", "serving_day": None, "index": {"kind": "hnsw", "params": index.params}}
    return Recommender(index, items, users, about)


def serve_child(spec: dict, port: int) -> None:
    """Child process: load the service and run uvicorn until terminated."""
    import uvicorn

    from twotower.retrieval.serve import create_app
    from twotower.retrieval.service import configure_threads, load_recommender

    args = argparse.Namespace(**spec["args"])
    if spec["scenario"] == "kuairand":
        from twotower.retrieval.run_model import open_experiment

        recommender = load_recommender(open_experiment(Path(args.run), args.experiment))
    else:
        recommender = synthetic_recommender(args)
    configure_threads(1)
    uvicorn.run(create_app(recommender), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(base: str, make_request, n_requests: int, clients: int, seconds: float, warmup: int) -> dict:
    """``clients`` concurrent workers send ``n_requests`` (at most ``seconds``); -> latency summary."""
    import httpx2

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        rng = np.random.default_rng(0)
        for _ in range(warmup):
            await make_request(client, rng)
        issued = 0
        deadline = time.perf_counter() + seconds

        async def worker(seed: int) -> None:
            nonlocal issued
            wrng = np.random.default_rng(seed)
            while issued < n_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                response = await make_request(client, wrng)
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(100 + i) for i in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "requests": len(ms),
        "clients": clients,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ms) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def scenario(name: str, args, workloads) -> dict:
    """Start the service for ``name`` in a child process, run each workload (label -> request maker)."""
    import httpx2

    port = free_port()
    spec = {"scenario": name, "args": vars(args)}
    child = mp.get_context("spawn").Process(target=serve_child, args=(spec, port), daemon=True)
    t0 = time.perf_counter()
    child.start()
    base = f"http://127.0.0.1:{port}"
    health = None
    while time.perf_counter() - t0 < args.startup_timeout and child.is_alive():
        try:
            health = httpx2.get(f"{base}/health", timeout=2.0).json()
            break
        except httpx2.HTTPError:
            time.sleep(0.5)
    if health is None:
        child.terminate()
        raise SystemExit(f"{name}: the service did not come up within {args.startup_timeout} s")
    out: dict = {"startup_s": round(time.perf_counter() - t0, 1), "health": health}
    print(f"  {name}: service up in {out['startup_s']} s ({health['catalog_items']:,} items, {health['users_known']:,} users)", flush=True)
    try:
        for label, make in workloads(health):
            for clients in args.clients:
                result = asyncio.run(load(base, make, args.requests, clients, args.seconds, args.warmup))
                out[f"{label}, {clients} clients"] = result
                print(f"  {name} {label}, {clients} clients: {result['requests_per_s']} req/s, p50 {result['p50_ms']} ms, "
                      f"p99 {result['p99_ms']} ms ({result['requests']} requests, statuses {result['statuses']})", flush=True)
    finally:
        child.terminate()
        child.join(10)
    return out


def kuairand_workloads(args):
    import pandas as pd

    from twotower.retrieval.run_model import open_experiment

    run = open_experiment(Path(args.run), args.experiment)
    # users with a training-day history row played inside the serving day's lookback window: known
    history = pd.read_parquet(run.directory / "prepared" / "history.parquet", columns=["user_id", "day"])
    users = np.sort(history.loc[pd.to_datetime(history["day"]) < pd.Timestamp(run.val_day), "user_id"].unique())
    catalog = run.prepared("catalog", run.val_day)["item_id"].to_numpy()

    def workloads(health):
        async def get(client, rng):
            return await client.get("/recommend", params={"user_id": int(rng.choice(users)), "k": 100})

        async def post(client, rng):
            plays = [{"item_id": int(i), "watch_fraction": float(f)} for i, f in zip(rng.choice(catalog, 20), rng.random(20) * 1.2, strict=True)]
            return await client.post("/recommend", json={"history": plays, "k": 100})

        return [("GET /recommend k=100", get), ("POST /recommend k=100 (20-play history)", post)]

    return workloads


def synthetic_workloads(args):
    def workloads(health):
        async def get(client, rng):
            return await client.get("/recommend", params={"user_id": int(rng.integers(0, args.users)), "k": 100})

        return [("GET /recommend k=100", get)]

    return workloads


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A completed KuaiRand run directory.")
    parser.add_argument("-e", "--experiment", type=int, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, nargs="+", default=[8], help="Concurrent clients (several: one run each).")
    parser.add_argument("--seconds", type=float, default=120.0, help="Time bound of each workload.")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, default=256)
    parser.add_argument("--recall-queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--skip-kuairand", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args(argv)

    from twotower.io import write_json

    report: dict = {
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": sys.version.split()[0], "platform": platform.platform()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "goals_p99_ms": {"kuairand": 20, "synthetic_1m_hnsw": 50},
    }
    if not args.skip_kuairand:
        if args.run is None:
            raise SystemExit("give --run RUN_DIR (a completed KuaiRand run), or --skip-kuairand")
        report["kuairand"] = scenario("kuairand", args, kuairand_workloads(args))
    if not args.skip_synthetic:
        report["synthetic_index"] = prepare_synthetic(args)
        report["synthetic"] = scenario("synthetic", args, synthetic_workloads(args))
    report["machine"]["load_avg_after"] = os.getloadavg()
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
