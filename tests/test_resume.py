"""A run killed with SIGKILL during training and finished with `run --resume` gives exactly the metrics of an
uninterrupted run with the same seed; an interrupted run is flagged, never read as complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twotower.config import parse_config, write_resolved_config
from twotower.runs import RunError, require_run


def _log(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random generic log: 150 users, 60 items, 6 days, enough rows that an epoch takes a moment."""
    rng = np.random.default_rng(seed)
    n = 9000
    users, items = rng.integers(0, 150, n), rng.integers(0, 60, n)
    quality = rng.uniform(0.2, 1.0, 60)
    start = pd.Timestamp("2024-03-01", tz="UTC").value // 10**6
    events = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": start + rng.integers(0, 6 * 86_400_000, n),
            "watch_seconds": 20.0 * np.clip(rng.beta(2, 2, n) * 1.4 * quality[items], 0, 1.2),
            "duration_seconds": 20.0,
        }
    )
    items_table = pd.DataFrame({"item_id": np.arange(60), "creator_id": np.arange(60) % 7, "duration_seconds": 20.0})
    directory.mkdir(parents=True)
    events.to_parquet(directory / "events.parquet", index=False)
    items_table.to_parquet(directory / "items.parquet", index=False)
    return directory / "events.parquet", directory / "items.parquet"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    events, items = _log(root / "data")
    cfg = parse_config(
        {
            "name": "resume",
            "seed": 3,
            "data": {"adapter": "generic", "path": str(events), "items_path": str(items)},
            "content": {"encoder": "metadata", "pca_components": 4, "cache_dir": str(root / "cache")},
            "model": {"hidden": [32], "output_dim": 8, "user_features": ["pos_mean_hist_emb", "context", "user_base"]},
            "train": {"epochs": 6, "patience": 6, "batch_size": 32},
            "experiments": [{"id": 1, "train_start": "2024-03-02", "train_end": "2024-03-05", "val_date": "2024-03-06"}],
        }
    )
    write_resolved_config(cfg, root / "resume.toml")
    return root / "resume.toml"


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "twotower.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_run_resumes_to_the_uninterrupted_metrics(config_file, tmp_path):
    out = tmp_path / "runs"
    proc = _cli("run", str(config_file), "--out", str(out), "--no-reuse")
    state = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("resume/*/experiment_1/train_state.pt"))
        if found:
            state = found[0]
            break
        time.sleep(0.005)
    assert state is not None, "training never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = state.parents[1]
    assert not (run_dir / "experiment_1" / "metrics.json").exists()  # killed during training
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    with pytest.raises(RunError, match="not a completed run .*--resume"):
        require_run(run_dir)
    resumed = _cli("run", "--resume", str(run_dir))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    # the reference in the same conditions (one thread: CPU float sums depend on the thread count)
    assert _cli("run", str(config_file), "--out", str(tmp_path / "reference"), "--no-reuse").wait(timeout=600) == 0
    reference = next((tmp_path / "reference" / "resume").iterdir())
    got = json.loads((run_dir / "experiment_1" / "metrics.json").read_text())
    want = json.loads((reference / "experiment_1" / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"] and got["training"]["train_loss"] == want["training"]["train_loss"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
