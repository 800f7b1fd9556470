"""Data-parallel training: 2 processes (gloo on CPU, ``torch.multiprocessing.spawn``) against one process with
the same global batch and seed, and how streamed row groups are dealt to the ranks.

Tolerance: the 2 processes compute the same sums as the one process, but each rank sums its half of the
batch and the gradient all-reduce adds the halves, so float32 rounding differs from the one process's
single sum (about 1e-7 relative per step); Adam carries it through the steps. Loss curves agree to 1e-5
relative and weights to 1e-4. Dropout is off: each rank draws its own masks, a different random stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from tests.retrieval_log import planted_log
from tests.test_model import ALL_ITEM, ALL_USER, small_config, synthetic
from tests.test_train_stream import files_of
from twotower.checkpoint import load_checkpoint
from twotower.config import TrainConfig
from twotower.distributed import Distributed
from twotower.stream.batches import StreamPlan
from twotower.stream.files import ExampleFiles
from twotower.train import train_model

BCE_MODEL = small_config(user_features=ALL_USER, item_features=ALL_ITEM)
BCE = TrainConfig(batch_size=64, epochs=2, learning_rate=1e-2, patience=2, device="cpu")
SOFTMAX_MODEL = small_config(user_features=("pos_mean_hist_emb", "user_id"), item_features=("content", "item_base"),
                             normalize=True, temperature=0.2)  # fmt: skip
SOFTMAX = TrainConfig(objective="softmax", batch_size=32, negatives=16, epochs=2, patience=2, learning_rate=3e-3,
                      device="cpu", refit=False)  # fmt: skip


def _cases(tmp: Path) -> dict:
    """name -> (train_model's arguments, its keyword arguments); the streamed case reads the Parquet files
    ``files_of`` wrote into ``tmp``."""
    data, log = synthetic(), planted_log(n_users=60, n_items=80, days=4)
    return {
        "bce": ((BCE_MODEL, BCE, data["train"], data["history"], data["users"], data["item_table"]), {"seed": 2}),
        "softmax": ((SOFTMAX_MODEL, SOFTMAX, log["train"], log["history"], None, log["item_table"]),
                    {"catalog": log["catalog"]}),  # fmt: skip
        "streamed": ((BCE_MODEL, BCE.model_copy(update={"shuffle_buffer": 100}),
                      ExampleFiles(tmp / "train.parquet", tmp / "history.parquet"), None,
                      data["users"], data["item_table"]), {"seed": 2}),  # fmt: skip
    }


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    dist = Distributed(rank, world, torch.device("cpu"))
    results = {}
    for name, (args, kw) in _cases(Path(tmp)).items():
        result = train_model(*args, os.path.join(tmp, f"ddp_{name}"), dist=dist, **kw)
        results[name] = result.as_dict()
    if rank == 0:
        with open(os.path.join(tmp, "ddp.json"), "w") as f:
            json.dump(results, f)
    torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    files_of(synthetic(), tmp)
    mp.spawn(_worker, args=(2, str(tmp)), nprocs=2, join=True)
    return tmp, json.loads((tmp / "ddp.json").read_text())


@pytest.mark.parametrize("name", ["bce", "softmax"])
def test_two_processes_equal_one_with_the_same_global_batch(two_processes, name, tmp_path):
    tmp, results = two_processes
    torch.set_num_threads(1)
    files_of(synthetic(), tmp_path)
    args, kw = _cases(tmp_path)[name]
    one = train_model(*args, tmp_path / "one", **kw)
    two = results[name]
    np.testing.assert_allclose(two["train_loss"], one.train_loss, rtol=1e-5)
    np.testing.assert_allclose(two["refit_loss"], one.refit_loss, rtol=1e-5)
    np.testing.assert_allclose(two["holdout_metric"], one.holdout_metric, rtol=1e-5)
    assert two["best_epoch"] == one.best_epoch and two["n_train"] == one.n_train and two["n_refit"] == one.n_refit
    wa, wb = (load_checkpoint(p).model.state_dict() for p in (two["model_path"], one.model_path))
    last = max(k for k in wa if k.startswith("item_tower.net.") and k.endswith(".bias"))
    for key in wa:
        a, b = wa[key].numpy(), wb[key].numpy()
        if name == "softmax" and key == last:
            # The constant of the item bias shifts every candidate's logit alike: a softmax is blind to it, so
            # its gradient is pure rounding noise, which Adam scales into full-size steps. Not comparable.
            a, b = a[:-1], b[:-1]
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=key)


def test_two_processes_stream_their_own_row_groups_to_one_checkpoint(two_processes):
    tmp, results = two_processes
    streamed = results["streamed"]
    assert streamed["n_refit"] == 600 and len(streamed["train_loss"]) == 2 and np.isfinite(streamed["train_loss"]).all()
    assert load_checkpoint(tmp / "ddp_streamed" / "model.pt").meta["refit"] == streamed["refit"]


def test_row_groups_are_dealt_to_ranks_without_overlap_and_steps_agree(tmp_path):
    index = files_of(synthetic(), tmp_path).scan()
    days = [int(d) for d in index.days]
    plans = [StreamPlan(index, days, False, 16, SimpleNamespace(rank=r, world_size=3)) for r in range(3)]
    owned = [set(p.groups.tolist()) for p in plans]
    assert set().union(*owned) == set(range(len(index.rows))) and sum(map(len, owned)) == len(index.rows)
    assert sum(p.n_rows for p in plans) == index.n_rows
    assert max(p.n_rows for p in plans) - min(p.n_rows for p in plans) <= index.rows.sum(axis=1).max()
    assert len({p.steps for p in plans}) == 1 and plans[0].steps == max(-(-p.n_rows // 16) for p in plans)
    within = [StreamPlan(index, days, True, 16, SimpleNamespace(rank=r, world_size=3), within_day=True) for r in range(3)]
    per_rank = [sum(-(-int(n) // 16) for n in p.counts.sum(axis=0)) for p in within]
    assert within[0].steps == max(per_rank) and sum(p.n_rows for p in within) == index.positives.sum()


def test_torchrun_runs_the_train_command_as_one_training(tmp_path):
    """`torchrun --nproc-per-node 2 ... twotower train` (streamed) writes one run directory that `evaluate`
    completes; rank 1 writes nothing of its own."""
    from tests.test_pipeline import _config
    from twotower.config import write_resolved_config
    from twotower.data.prepare import prepare_experiment
    from twotower.pipeline import evaluate_run

    cfg = _config(tmp_path)
    config = write_resolved_config(cfg, tmp_path / "config.toml")
    prepared = tmp_path / "prepared"
    prepare_experiment(cfg, cfg.experiments[0], prepared / "experiment_1", progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "twotower.cli", "train", str(config), "--prepared", str(prepared), "--out", str(tmp_path / "runs"),
               "--set", "train.shuffle_buffer=1000"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1
    (run_dir,) = (tmp_path / "runs" / cfg.name).iterdir()
    training = json.loads((run_dir / "experiment_1" / "training.json").read_text())
    assert training["n_refit"] == len(pd.read_parquet(prepared / "experiment_1" / "train.parquet"))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "trained"
    evaluate_run(run_dir, progress=False)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
