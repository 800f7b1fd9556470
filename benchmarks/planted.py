"""Planted-signal benchmark: the ablation series on a log whose structure is known (``twotower.synth``).

For each seed, generates a planted log (default 3,000 users, 2,000 items, 20 topics, 14 days; the seed drives
both the data and the training), runs the five variants of ``twotower.ablation.VARIANTS`` through the normal
``twotower.pipeline.run`` with the seed's model settings, and measures the played re-ranking metrics of the
model and the history probe (``twotower.probe``). Writes ``benchmarks/results/planted.json`` (every run and
the mean ± sd per variant) and prints a Markdown table. Usage:

    python benchmarks/planted.py [--seeds 0 1 2] [--users 3000 --items 2000 --topics 20 --days 14]
                                 [--epochs 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import statistics
import time
from pathlib import Path

import torch

from twotower.ablation import VARIANTS, identity_proxies, variant_config
from twotower.config import parse_config
from twotower.io import write_json
from twotower.pipeline import run
from twotower.probe import probe_experiment
from twotower.synth import SynthSpec, config_dict, generate, write_planted

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("auc", "ndcg@10", "map")


def one_run(raw: dict, variant: str, runs: Path, data_dir: Path) -> dict:
    """Run one variant; its model and baseline metrics, the probe, the proxies it keeps and its wall time."""
    cfg = parse_config(variant_config(raw, variant))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # run() prints its tables; the summary is ours
        run_dir = run(cfg, runs, progress=False)
    seconds = time.perf_counter() - started
    experiment = run_dir / "experiment_1"
    if json.loads((run_dir / "status.json").read_text()).get("state") != "completed":
        raise RuntimeError(f"{variant}: the run did not complete, see {experiment}")
    payload = json.loads((experiment / "metrics.json").read_text())
    return {
        "variant": variant,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "seconds": round(seconds, 1),
        "identity_proxies": identity_proxies(cfg.model),
        "metrics": {
            name: {m: values.get(m) for m in (*METRICS, "n_users")}
            for name, values in payload["metrics"].items()
        },
        "best_epoch": payload["training"]["best_epoch"],
        "probe": probe_experiment(experiment, data_dir).as_dict(),
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and sd over seeds per variant (and per baseline, from the first variant's runs)."""

    def stats(values: list[float]) -> list[float]:
        return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]

    summary: dict = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {m: stats([r["metrics"]["model"][m] for r in mine]) for m in METRICS}
        summary[variant]["probe"] = stats([r["probe"]["accuracy"] for r in mine])
        summary[variant]["identity_proxies"] = mine[0]["identity_proxies"]
    first = [r for r in runs if r["variant"] == next(iter(VARIANTS))]
    for baseline in sorted(set(first[0]["metrics"]) - {"model"}):
        summary[f"baseline: {baseline}"] = {
            m: stats([r["metrics"][baseline][m] for r in first]) for m in METRICS
        }
    return summary


def markdown(summary: dict, n_seeds: int, chance: float) -> str:
    head = f"| variant (mean ± sd over {n_seeds} seeds) | item-identity proxies kept | " + " | ".join(METRICS)
    lines = [head + f" | history probe (chance {chance:.2f}) |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    for name, values in summary.items():
        cells = [f"{values[m][0]:.3f} ± {values[m][1]:.3f}" for m in METRICS]
        probe = f"{values['probe'][0]:.3f} ± {values['probe'][1]:.3f}" if "probe" in values else ""
        proxies = ", ".join(values.get("identity_proxies", [])) or ("none" if "probe" in values else "")
        lines.append(f"| {name} | {proxies} | " + " | ".join(cells) + f" | {probe} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "planted_benchmark")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "planted.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work / dt.datetime.now().strftime("%Y%m%d-%H%M%S")  # never reuse an earlier run's files
    started = time.perf_counter()
    results, specs = [], []
    for seed in args.seeds:
        spec = SynthSpec(users=args.users, items=args.items, topics=args.topics, days=args.days, seed=seed)
        specs.append(spec.as_json())
        data_dir = work / f"data_seed{seed}"
        write_planted(generate(spec), data_dir)
        raw = config_dict(spec, data_dir, epochs=args.epochs)
        for variant in VARIANTS:
            results.append(one_run(raw, variant, work / "runs", data_dir))
            r = results[-1]
            print(
                f"seed {seed} {variant}: auc {r['metrics']['model']['auc']:.3f} ({r['seconds']} s)",
                flush=True,
            )
    summary = summarise(results)
    payload = {
        "specs": specs,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": results,
    }
    write_json(args.out, payload)
    print(markdown(summary, len(args.seeds), 1.0 / args.topics))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
