"""Wall time and peak memory of ``prepare``: the KuaiRand slice and a synthetic 10M-event log.

Each case runs in a fresh subprocess, so that its peak resident memory (DuckDB included) is its own.
Writes benchmarks/results/prepare.json. Usage: python benchmarks/prepare.py [--events N] [--skip-kuairand]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand-pure"

CHILD = """
import sys, json
from pathlib import Path
from twotower.config import load_config, parse_config
from twotower.data.prepare import prepare_experiment
spec = json.loads(sys.argv[1])
if spec["kind"] == "kuairand":
    cfg = load_config(spec["config"], data_path=spec["data"])
else:
    cfg = parse_config({
        "name": "synthetic", "seed": 0,
        "data": {"adapter": "generic", "path": spec["events"], "items_path": spec["items"], "timezone": "Asia/Shanghai"},
        "experiments": [{"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-07", "val_date": "2022-05-08"}],
    })
result = prepare_experiment(cfg, cfg.experiments[0], Path(spec["out"]), progress=False)
import resource
print(json.dumps({"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "step_seconds": result.funnel.notes["step_seconds"], "funnel": result.funnel.as_dict()["steps"]}))
"""


def run_case(spec: dict) -> dict:
    """Run one prepare in a subprocess; its wall seconds and its own peak RSS (GiB, from wait4)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    funnel = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(funnel.pop("peak_rss_kib") / 2**20, 3), **funnel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--skip-kuairand", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prepare.json")
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(HERE))
        from synthetic import generate

        start = time.perf_counter()
        events, items = generate(tmp / "synthetic", args.events)
        results["synthetic_generation_s"] = round(time.perf_counter() - start, 2)
        spec = {"kind": "synthetic", "events": str(events), "items": str(items), "out": str(tmp / "out_syn")}
        results["cases"][f"synthetic_{args.events}"] = run_case(spec)
        print(f"synthetic {args.events:,} events: {results['cases'][f'synthetic_{args.events}']['wall_s']} s")
        if not args.skip_kuairand and KUAIRAND.exists():
            spec = {"kind": "kuairand", "config": str(ROOT / "configs" / "kuairand_blip_history.toml"), "data": str(KUAIRAND), "out": str(tmp / "out_kr")}
            results["cases"]["kuairand_experiment_1"] = run_case(spec)
            print(f"kuairand: {results['cases']['kuairand_experiment_1']['wall_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("wall_s", "peak_rss_gib")} for k, v in results["cases"].items()}, indent=2))


if __name__ == "__main__":
    main()
