"""Ablation on KuaiRand: the seed config with and without history features and the content vector.

Runs each config of ABLATIONS with several seeds (the seed drives sampling, initialisation and batch order)
through the normal `twotower run` pipeline, and writes the mean and standard deviation of the headline
metrics to benchmarks/results/ablation.json plus a Markdown table (printed). Usage:
    python benchmarks/ablation.py [--seeds 0 1 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from twotower.config import load_config
from twotower.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = {
    "seed sheet (content + history)": ROOT / "configs" / "kuairand_blip_history.toml",
    "without history": ROOT / "configs" / "ablations" / "no_history.toml",
    "without content vector": ROOT / "configs" / "ablations" / "no_content.toml",
    "without both": ROOT / "configs" / "ablations" / "no_history_no_content.toml",
}
METRICS = ("auc", "map", "mrr", "ndcg@10", "recall@all_pos", "global_auc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablation.json")
    args = parser.parse_args()
    results: dict = {}
    for label, path in ABLATIONS.items():
        base = load_config(path, data_path=args.data)
        per_seed = []
        for seed in args.seeds:
            run_dir = run(base.model_copy(update={"seed": seed}), args.runs, progress=False)
            summary = json.loads((run_dir / "summary.json").read_text())
            per_seed.append({e["id"]: e["metrics"].get("model") for e in summary["experiments"]})
        results[label] = {
            str(exp): {
                m: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                for m in METRICS
                if (v := [s[exp][m] for s in per_seed if s.get(exp)])
            }
            for exp in per_seed[0]
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=2) + "\n")
    print(markdown(results, len(args.seeds)))


def markdown(results: dict, n_seeds: int) -> str:
    lines = [f"| model (mean ± sd over {n_seeds} seeds) | exp | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for label, by_exp in results.items():
        for exp, values in by_exp.items():
            cells = [f"{values[m][0]:.3f} ± {values[m][1]:.3f}" for m in METRICS]
            lines.append(f"| {label} | {exp} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
