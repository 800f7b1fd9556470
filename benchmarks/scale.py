"""Scale: a synthetic log of N events over 14 days, prepared on DuckDB with a memory limit, then one epoch of
streamed training; wall time and peak memory per stage, training throughput against the machine's matmul rate.

Stages (each in its own subprocess; peak memory = the most resident memory of its process tree, polled by
psutil, or the child's own peak from wait4 when higher):

  generate   benchmarks/synthetic.generate_by_day: events.parquet written one day at a time
  prepare    twotower prepare on DuckDB (memory_limit, threads, temp_directory set)
  train      the streamed input ([train] shuffle_buffer): one scan of the key columns, the feature space fitted
             in one streaming pass, one epoch over every training day; then, in the same process, torch.mm
             timed at the towers' layer shapes and the batch size (forward and both backward products)
  train_days K: the same on the last K training days only (about a quarter of the examples for K = 3 of
             13, with the window's longest histories): memory must not follow the examples

Throughput: examples/s, and GFLOP/s = examples/s x 2 x (multiply-adds of a forward pass through both
towers' linear layers) x 3 (forward + backward ~ 3 x forward) against the matmul rate at the same shapes.

Usage: python benchmarks/scale.py --events 100000000 [--threads 2] [--log DIR] [--work DIR] [--keep]
Writes benchmarks/results/scale_<events>.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from twotower.data.prepared import is_complete

HERE = Path(__file__).resolve().parent
DAYS = 14

PREPARE = """
import json, sys
from pathlib import Path
from twotower.config import parse_config
from twotower.data import prepare as prep
spec = json.loads(sys.argv[1])
raw = {
    "name": "scale", "seed": 0,
    "data": {"adapter": "generic", "path": spec["events"], "items_path": spec["items"], "timezone": "Asia/Shanghai"},
    "experiments": [{"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-13", "val_date": "2022-05-14"}],
}
raw["data"]["duckdb"] = {"memory_limit": spec["memory_limit"], "threads": spec["threads"], "temp_directory": spec["spill"]}
cfg = parse_config(raw)
result = prep.prepare_experiment(cfg, cfg.experiments[0], Path(spec["out"]), overwrite=True, progress=False)
print(json.dumps({"settings": raw["data"]["duckdb"], "engine": result.funnel.notes.get("engine"), "step_seconds": result.funnel.notes.get("step_seconds"),
                  "funnel": result.funnel.as_dict()["steps"]}))
"""

GENERATE = """
import json, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from synthetic import generate_by_day
spec = json.loads(sys.argv[1])
events, items = generate_by_day(Path(spec["out"]), spec["events"], days=spec["days"], n_users=spec["users"], n_items=spec["items"])
print(json.dumps({"events": str(events), "items": str(items)}))
"""


def run_stage(name: str, code: str | Path, *args: str, env: dict | None = None) -> dict:
    """Run ``code`` (source, or a script's path) in a fresh Python; its wall time, peak memory (GiB) and the
    JSON it prints last."""
    start, load_start = time.perf_counter(), os.getloadavg()
    command = [sys.executable, str(code)] if isinstance(code, Path) else [sys.executable, "-c", code]
    # the child's output goes to files, not pipes: a pipe nobody reads until the end fills (DuckDB's progress
    # lines on a long query) and blocks the child
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([*command, *args], stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.2)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    print(f"{name}: {wall:.1f} s, peak {peak / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    load = {"load_average_start": load_start, "load_average_end": os.getloadavg()}
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(peak / 2**30, 3), **load, **result}


def table(results: dict) -> str:
    """The stages as a Markdown table."""
    rows = ["| stage | events / examples | wall | peak memory | throughput | fraction of matmul rate |", "|---|---|---|---|---|---|"]
    events, stages = results["events"], results["stages"]
    for key, what in (("generate", "generate"), ("prepare", "prepare (DuckDB)")):
        if key in stages:
            st = stages[key]
            rows.append(f"| {what} | {events:,} events | {st['wall_s']:.0f} s | {st['peak_rss_gib']:.2f} GiB | {events / st['wall_s']:,.0f} events/s | |")
    for key, train in stages.items():
        if not key.startswith("train"):
            continue
        t = train["timing"]
        rows.append(
            f"| {key}: scan + streaming fit | {train['examples']:,} examples | {t['scan_s'] + t['fit_s']:.0f} s | | "
            f"{train['examples'] / (t['scan_s'] + t['fit_s']):,.0f} examples/s | |"
        )
        rows.append(
            f"| {key}: one epoch | {train['examples']:,} examples | {t['epoch_s']:.0f} s (input {t['input_s']:.0f} s) | "
            f"{train['peak_rss_gib']:.2f} GiB (whole stage) | {train['examples_per_s']:,.0f} examples/s, "
            f"{train['achieved_gflops']:.1f} GFLOP/s | {train['fraction_of_matmul']:.0%} of {train['matmul_gflops']:.1f} GFLOP/s |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: events / 20")
    parser.add_argument("--items", type=int, default=None, help="default: events / 50")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch threads (on a shared machine 2 threads ran 5x slower than 1: each op waits for both)",
    )
    parser.add_argument("--memory-limit", default="14GB", help="DuckDB memory_limit")
    parser.add_argument("--shuffle-buffer", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--subset-days", type=int, default=3, help="also train on the last K days (0: skip)")
    parser.add_argument(
        "--log", type=Path, default=None,
        help="an existing log directory (events.parquet, items.parquet, from an earlier run's work/log): skip generating",
    )
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated and prepared files")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_"))
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free / 2**30
    results: dict = {
        "events": args.events,
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "load_average_start": os.getloadavg(), "free_disk_gib": round(free, 1)},
        "settings": {"duckdb_threads": args.threads, "torch_threads": args.torch_threads, "memory_limit": args.memory_limit,
                     "shuffle_buffer": args.shuffle_buffer, "batch_size": args.batch_size},
        "stages": {},
    }  # fmt: skip
    threads = {"OMP_NUM_THREADS": str(args.threads)}
    torch_threads = {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    try:
        log = args.log or work / "log"
        spec = {"out": str(log), "events": args.events, "days": DAYS, "users": args.users, "items": args.items}
        if args.log is None and not (log / "items.parquet").exists():
            results["stages"]["generate"] = run_stage("generate", GENERATE, json.dumps(spec), str(HERE))
        results["log"] = {"reused": "generate" not in results["stages"],
                          "events_file_gib": round((log / "events.parquet").stat().st_size / 2**30, 2)}
        prepared = work / "prepared"
        if not is_complete(prepared):  # absent, or interrupted (prepare overwrites an interrupted result)
            (work / "spill").mkdir(exist_ok=True)
            spec = {"events": str(log / "events.parquet"), "items": str(log / "items.parquet"),
                    "out": str(prepared), "memory_limit": args.memory_limit, "threads": args.threads, "spill": str(work / "spill")}  # fmt: skip
            results["stages"]["prepare"] = run_stage("prepare", PREPARE, json.dumps(spec), env=threads)
        train_spec = {"prepared": str(prepared), "threads": args.torch_threads, "shuffle_buffer": args.shuffle_buffer,
                      "batch_size": args.batch_size, "days": 0}  # fmt: skip
        train_code = HERE / "scale_train.py"
        results["stages"]["train"] = run_stage("train", train_code, json.dumps(train_spec), env=torch_threads)
        if args.subset_days:
            train_spec |= {"days": args.subset_days, "data_only": True}
            results["stages"][f"train_days{args.subset_days}"] = run_stage("train_days", train_code, json.dumps(train_spec), env=torch_threads)
    finally:
        results["machine"]["load_average_end"] = os.getloadavg()
        out = args.out or HERE / "results" / f"scale_{args.events}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    print(json.dumps({k: {m: v.get(m) for m in ("wall_s", "peak_rss_gib")} for k, v in results["stages"].items()}, indent=2))


if __name__ == "__main__":
    main()
