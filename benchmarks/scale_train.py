"""The training stage of benchmarks/scale.py, in a process of its own: streamed input over a prepared
directory (scan, streaming fit, one epoch), then torch.mm timed at the towers' layer shapes.

Usage: python benchmarks/scale_train.py '{"prepared": DIR, "threads": 1, "shuffle_buffer": N, "batch_size": B,
"days": K}' (K = 0: every training day; K > 0: the last K days, whose history snapshots are the longest, so
that a row takes as much buffer memory as in the whole window). Prints one JSON line.
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from twotower.config import ModelConfig, TrainConfig
from twotower.stream.files import ExampleFiles
from twotower.stream.fit import FitStatistics
from twotower.train_pass import PassInputs, StreamedRows, TrainingPass

CONTENT_DIM = 64  # synthetic content vectors (the log has no content): a PCA-sized table


def content_table(prepared: Path) -> pd.DataFrame:
    """Deterministic random content vectors for every item of items.parquet (item_id, vector)."""
    ids = pd.read_parquet(prepared / "items.parquet", columns=["item_id"])["item_id"].to_numpy(np.int64)
    vectors = np.random.default_rng(0).standard_normal((len(ids), CONTENT_DIM), dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), CONTENT_DIM)
    return pd.DataFrame({"item_id": ids, "vector": pd.Series(pd.arrays.ArrowExtensionArray(column))})


def forward_macs(model: torch.nn.Module) -> int:
    """Multiply-adds of one example's forward pass through every linear layer (both towers)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


class MatmulReference:
    """torch.mm at each linear layer's shapes and the batch size: the forward product and both backward ones
    (input gradient, weight gradient); ``run`` times one round of all of them."""

    def __init__(self, model: torch.nn.Module, batch: int):
        shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self.operands = []
        for n_in, n_out in shapes:
            x, w, g = torch.randn(batch, n_in), torch.randn(n_in, n_out), torch.randn(batch, n_out)
            self.operands += [(x, w), (g, w.t()), (x.t(), g)]
        self.flops = 2 * sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in self.operands)
        self.rounds, self.seconds = 0, 0.0
        for a, b in self.operands:  # warm up
            torch.mm(a, b)

    def run(self) -> None:
        start = time.perf_counter()
        for a, b in self.operands:
            torch.mm(a, b)
        self.seconds += time.perf_counter() - start
        self.rounds += 1

    def gflops(self) -> float:
        return self.flops * self.rounds / self.seconds / 1e9


class Interleaved:
    """The training batches with a matmul reference round every ``every`` batches, so that the reference
    rate is measured under the same load as the training around it; also the time spent producing batches."""

    def __init__(self, batches, reference: MatmulReference, every: int = 10):
        self.batches, self.reference, self.every, self.input_s = batches, reference, every, 0.0

    def __len__(self) -> int:
        return len(self.batches)

    def __getattr__(self, name):  # loss, max_held, ... of the batches
        return getattr(self.batches, name)

    def __iter__(self):
        inner = iter(self.batches)
        for step in range(len(self.batches)):
            start = time.perf_counter()
            batch = next(inner)
            self.input_s += time.perf_counter() - start
            if step % self.every == 0:
                self.reference.run()
            yield batch
        for _ in inner:  # the generator's end (it draws its last permutation there)
            pass


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    prepared = Path(spec["prepared"])
    model_config = ModelConfig(user_features=("pos_mean_hist_emb", "neg_mean_hist_emb", "context", "user_base"))
    train_config = TrainConfig(batch_size=spec["batch_size"], shuffle_buffer=spec["shuffle_buffer"], device="cpu")
    item_table = content_table(prepared)
    timing = {}
    start = time.perf_counter()
    files = ExampleFiles.prepared(prepared)
    index = files.scan()
    timing["scan_s"] = time.perf_counter() - start
    days = [int(d) for d in index.days][-spec["days"] :] if spec["days"] else [int(d) for d in index.days]
    start = time.perf_counter()
    stats = FitStatistics(model_config)
    columns = ["user_id", "item_id", "creator_id", "day", "label", *(c for s in stats.groups.values() for c in s.columns)]
    for g in np.flatnonzero(index.counts(days).sum(axis=1) > 0):
        stats.update(files.read(int(g), columns, days))
    features = stats.features(None, item_table)
    timing["fit_s"] = time.perf_counter() - start
    inputs = PassInputs(model_config, train_config, None, None, item_table, None, torch.device("cpu"), False)
    torch.manual_seed(0)
    rows = StreamedRows(files, index, days, features)
    one = TrainingPass(inputs, rows, seed=0)
    probe = Interleaved(one.batches, MatmulReference(one.model, spec["batch_size"]))
    one.batches = probe
    loss, seen, seconds = one.run_epoch("epoch")
    training_s = seconds - probe.reference.seconds  # the epoch without the interleaved reference rounds
    timing |= {"epoch_s": training_s, "input_s": probe.input_s, "reference_s": probe.reference.seconds}
    macs = forward_macs(one.model)
    achieved = seen / training_s * 2 * macs * 3 / 1e9
    reference = probe.reference.gflops()
    result = {
        "examples": seen, "days": len(days), "row_groups": len(files), "loss": loss, "timing": timing,
        "examples_per_s": seen / training_s, "forward_macs_per_example": macs, "achieved_gflops": achieved,
        "matmul_gflops": reference, "fraction_of_matmul": achieved / reference, "max_rows_held": one.batches.max_held,
        "own_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "torch_threads": torch.get_num_threads(), "batches": len(one.batches),
    }  # fmt: skip
    if spec.get("data_only"):  # the input pipeline alone: read, encode, shuffle, cut batches
        start = time.perf_counter()
        for _ in one.batches:
            pass
        result["input_only_examples_per_s"] = seen / (time.perf_counter() - start)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
