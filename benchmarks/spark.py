"""``prepare`` on Spark (local mode) and on DuckDB: wall time and peak memory, and whether the results agree.

Cases (each in a fresh subprocess; peak memory is the resident set of its whole process tree, polled with
psutil, so Spark's JVM counts):

* ``synthetic``: a deterministic synthetic log of ``--events`` plays (benchmarks/synthetic.py), on DuckDB
  and on Spark ``local[2]``, and the two results compared as below;
* ``kuairand``: experiment 1 of configs/kuairand_blip_history.toml on the KuaiRand-Pure slice
  (../shared/data), on both engines, and the two prepared directories compared table by table
  (``twotower.data.parity``: same columns, types and rows, floats to 1e-9).

Writes benchmarks/results/spark.json. Usage:
    python benchmarks/spark.py [--events N] [--skip-synthetic] [--skip-kuairand] [--spark-conf KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand-pure"
CONFIG = ROOT / "configs" / "kuairand_blip_history.toml"
# What the Spark cases give the session (the config's [data.spark.conf]); the rest is the project's default
# for local[2] (see twotower.data.engine.spark_conf).
SPARK_CONF = {"spark.driver.memory": "4g"}

CHILD = """
import json, sys
from pathlib import Path
from twotower.config import load_config, parse_config
from twotower.data.prepare import prepare_experiment
spec = json.loads(sys.argv[1])
engine = {"engine": spec["engine"], "spark": {"master": "local[2]", "conf": spec["spark_conf"]}}
if spec["kind"] == "kuairand":
    cfg = load_config(spec["config"], data_path=spec["data"])
    cfg = parse_config({**cfg.model_dump(mode="json"), "data": {**cfg.model_dump(mode="json")["data"], **engine}})
else:
    cfg = parse_config({
        "name": "synthetic", "seed": 0,
        "data": {"adapter": "generic", "path": spec["events"], "items_path": spec["items"], "timezone": "Asia/Shanghai", **engine},
        "experiments": [{"id": 1, "train_start": "2022-05-01", "train_end": "2022-05-07", "val_date": "2022-05-08"}],
    })
result = prepare_experiment(cfg, cfg.experiments[0], Path(spec["out"]), progress=False)
notes = result.funnel.notes
print(json.dumps({"step_seconds": notes["step_seconds"], "engine": notes["engine"], "funnel": result.funnel.as_dict()["steps"]}))
"""


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
            total += p.memory_info().rss
    return total


def run_case(spec: dict) -> dict:
    """One prepare in a subprocess: wall seconds, peak RSS of its process tree (GiB), its funnel and steps."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(watched))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    out = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak / 2**30, 2), **out}


def both_engines(results: dict, name: str, spec: dict, out: Path, parity_key: str | None = None) -> None:
    """``spec`` prepared on DuckDB and on Spark (``results["cases"][f"{name}_{engine}"]``), then the two
    prepared directories compared (``results[parity_key]``, default ``f"{name}_parity"``)."""
    from twotower.data.parity import compare_prepared

    for engine in ("duckdb", "spark"):
        load = _load()
        case = {"load_before": load, **run_case({**spec, "engine": engine, "out": f"{out}_{engine}"})}
        results["cases"][f"{name}_{engine}"] = case
        print(f"{name} {engine}: {case['wall_s']} s", flush=True)
    parity = compare_prepared(Path(f"{out}_duckdb"), Path(f"{out}_spark"))
    results[parity_key or f"{name}_parity"] = {"same": parity.same, "rows": parity.rows, "differences": parity.differences}
    print(f"{name} parity: {'same' if parity.same else parity.differences}", flush=True)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-kuairand", action="store_true")
    parser.add_argument("--spark-conf", nargs="*", default=[], metavar="KEY=VALUE", help="more Spark properties")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "spark.json")
    args = parser.parse_args()
    spark_conf = {**SPARK_CONF, **dict(item.split("=", 1) for item in args.spark_conf)}
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()},
        "spark_conf": spark_conf,
        "cases": {},
    }
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_kuairand and KUAIRAND.exists():
            spec = {"kind": "kuairand", "spark_conf": spark_conf, "config": str(CONFIG), "data": str(KUAIRAND)}
            both_engines(results, "kuairand", spec, tmp / "kr")
        if not args.skip_synthetic:
            sys.path.insert(0, str(HERE))
            from synthetic import generate

            start = time.perf_counter()
            events, items = generate(tmp / "synthetic", args.events)
            results["synthetic_generation_s"] = round(time.perf_counter() - start, 1)
            spec = {"kind": "synthetic", "spark_conf": spark_conf, "events": str(events), "items": str(items)}
            both_engines(results, f"synthetic_{args.events}", spec, tmp / "syn", parity_key="synthetic_parity")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    summary = {k: {m: v[m] for m in ("wall_s", "peak_rss_gib", "load_before")} for k, v in results["cases"].items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
