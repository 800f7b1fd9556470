"""Streaming training input: the shuffle buffers by hand, the streamed fit against ``FeatureSpace.fit``, and
training streamed from Parquet through a buffer holding every row against training in memory (identical
loss curves, held-out metrics and checkpoint tensors), and the buffer bound with a small buffer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.retrieval_log import planted_log
from tests.test_model import ALL_ITEM, ALL_USER, small_config, synthetic
from twotower.checkpoint import load_checkpoint
from twotower.config import TrainConfig
from twotower.model.feature_space import FeatureSpace, epoch_days
from twotower.stream.files import ExampleFiles, keys_hash
from twotower.stream.fit import FitStatistics, IdCounts
from twotower.stream.shuffle import Batcher, BatchPool, ShuffleBuffer, concat
from twotower.train import train_model
from twotower.train_data import StreamedExamples
from twotower.train_pass import PassInputs, TrainingPass

ROW_GROUP = 37  # several row groups per day, some straddling two days


def write(frame: pd.DataFrame, path, row_group: int = ROW_GROUP):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group)
    return path


def files_of(data: dict, tmp_path, row_group: int = ROW_GROUP) -> ExampleFiles:
    train = write(data["train"], tmp_path / "train.parquet", row_group)
    return ExampleFiles(train, write(data["history"], tmp_path / "history.parquet", 50))


@pytest.fixture(scope="module")
def data() -> dict:
    return synthetic()


# ---- the buffers -------------------------------------------------------------------------------------------


def _rows(n: int) -> dict:
    return {"id": torch.arange(n), "pos_hist": torch.arange(n, dtype=torch.int32)[:, None].repeat(1, 1 + n % 3)}


def _drain(buffer: ShuffleBuffer, parts: list[dict]) -> torch.Tensor:
    out = [piece for part in parts for piece in buffer.push(part)] + list(buffer.flush())
    return concat(out)["id"]


def test_a_buffer_holding_every_row_gives_randperm_of_the_input_order():
    rows = _rows(100)
    parts = [{k: v[i : i + 30] for k, v in rows.items()} for i in range(0, 100, 30)]
    got = _drain(ShuffleBuffer(100, torch.Generator().manual_seed(7), piece=8), parts)
    assert torch.equal(got, torch.randperm(100, generator=torch.Generator().manual_seed(7)))


def test_a_small_buffer_emits_every_row_once_and_mixes_within_its_window():
    parts = [{"id": torch.arange(i, i + 25)} for i in range(0, 200, 25)]
    buffer = ShuffleBuffer(40, torch.Generator().manual_seed(1), piece=16)
    out, held = [], []
    for part in parts:
        for piece in buffer.push(part):
            out.append(piece["id"])
            held.append(buffer.held)
    out += [p["id"] for p in buffer.flush()]
    got = torch.cat(out)
    assert sorted(got.tolist()) == list(range(200)) and max(held) == 40
    # the first row out arrives only once the buffer is full (row 40 enters as the first one leaves it)
    assert set(got[:10].tolist()) <= set(range(65))
    assert got.tolist() != sorted(got.tolist())


def test_history_columns_of_different_widths_are_padded_with_zeros():
    buffer = ShuffleBuffer(10, torch.Generator().manual_seed(0))
    narrow = {"id": torch.arange(3), "pos_hist": torch.ones(3, 1, dtype=torch.int32)}
    wide = {"id": torch.arange(3, 5), "pos_hist": torch.full((2, 4), 2, dtype=torch.int32)}
    out = concat([*buffer.push(narrow), *buffer.push(wide), *buffer.flush()])
    hist = out["pos_hist"][torch.argsort(out["id"])]
    assert hist.shape == (5, 4) and hist[:3].tolist() == [[1, 0, 0, 0]] * 3 and hist[3:].tolist() == [[2] * 4] * 2


def test_batcher_and_pool():
    batcher = Batcher(4)
    sizes = [len(b["id"]) for part in (_rows(3), _rows(6)) for b in batcher.push(part)]
    assert sizes == [4, 4] and [len(b["id"]) for b in batcher.flush()] == [1]
    pool = BatchPool(10, torch.Generator().manual_seed(3))
    assert [b for i in range(4) for b in pool.push(i, 2)] == []  # 8 rows held: nothing leaves
    assert list(pool.flush()) == [[0, 1, 2, 3][k] for k in torch.randperm(4, generator=torch.Generator().manual_seed(3))]
    left = [b for i in range(10) for b in pool.push(i, 3)]
    assert len(left) == 7 and pool.held <= 10 + 3 and sorted(left + list(pool.flush())) == list(range(10))


# ---- files and the streamed fit --------------------------------------------------------------------------


def test_scan_counts_rows_per_row_group_and_day_and_hashes_like_the_in_memory_rows(data, tmp_path):
    files = files_of(data, tmp_path)
    index = files.scan()
    train = data["train"]
    days = epoch_days(train["day"])
    assert len(files) == -(-len(train) // ROW_GROUP) and index.n_rows == len(train)
    np.testing.assert_array_equal(index.days, np.unique(days))
    np.testing.assert_array_equal(index.rows.sum(axis=0), np.bincount(np.searchsorted(index.days, days)))
    assert (index.rows > 0).sum() > len(files)  # some row groups straddle two days
    assert index.positives.sum() == train["label"].sum() and index.rows_hash == keys_hash(train)


def test_hive_partitioned_directory_reads_as_the_single_file(data, tmp_path):
    train = data["train"].assign(day=data["train"]["day"].astype(str))
    pq.write_to_dataset(pa.Table.from_pandas(train, preserve_index=False), tmp_path / "parts", partition_cols=["day"])
    single, parts = files_of(data, tmp_path).scan(), ExampleFiles(tmp_path / "parts").scan()
    assert parts.rows_hash == single.rows_hash and np.array_equal(parts.days, single.days)
    assert np.array_equal(parts.rows.sum(axis=0), single.rows.sum(axis=0))


def test_id_counts_merge_parts():
    counts = IdCounts()
    for part in ([5, 3, 5], [9], [3, 3, 7]):
        counts.update(np.array(part))
    other = IdCounts()
    other.update(np.array([9, 1]))
    ids, n = counts.merged(other).result()
    assert ids.tolist() == [1, 3, 5, 7, 9] and n.tolist() == [1, 3, 2, 1, 2]
    assert counts.vocab(min_count=2).ids_.tolist() == [3, 5]


@pytest.mark.parametrize("parts", [1, 7])
def test_streamed_fit_equals_fit(data, parts):
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM)
    rows = data["train"]
    expected = FeatureSpace(cfg).fit(rows, data["users"], data["item_table"])
    stats = FitStatistics(cfg)
    for part in np.array_split(np.arange(len(rows)), parts):
        stats.update(rows.iloc[part])
    got = stats.features(data["users"], data["item_table"])
    for name in ("users_", "items_", "creators_", "content_ids_"):
        np.testing.assert_array_equal(getattr(got, name).ids_, getattr(expected, name).ids_)
    assert got.content_scale_ == expected.content_scale_ and got.dims() == expected.dims()
    assert set(got.scalers_) == set(expected.scalers_) == {"user_base", "item_base", "creator", "user_static"}
    for group, scaler in expected.scalers_.items():
        assert got.scalers_[group].log1p == scaler.log1p and got.scalers_[group].columns == scaler.columns
        # float64 moments merged part by part: equal to rounding (module docstring of twotower.stream.fit)
        np.testing.assert_allclose(got.scalers_[group].mean_, scaler.mean_, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.scalers_[group].std_, scaler.std_, rtol=1e-12)


def test_streamed_fit_counts_categorical_static_codes_per_row():
    """A code seen on 3 users with 1, 2 and 2 rows is kept at min_count 5 (5 rows), one on 4 rows is not:
    the streamed fit weighs each user's code by the user's rows, as fit counts the joined rows."""
    cfg = small_config(user_features=("user_static",), item_features=())
    rows = pd.DataFrame({"user_id": [1, 2, 2, 3, 3, 4, 4, 4, 4, 5], "item_id": np.arange(10), "label": 1})
    users = pd.DataFrame(
        {"user_id": [1, 2, 3, 4, 5, 6], "static_x": [1.0, 2, 3, 4, 5, 6], "cat_seg": ["a", "a", "a", "b", None, "c"]}
    )
    expected = FeatureSpace(cfg).fit(rows, users)
    stats = FitStatistics(cfg)
    for part in (rows.iloc[:3], rows.iloc[3:]):
        stats.update(part)
    got = stats.features(users)
    assert expected.static_categories_.values_ == {"cat_seg": ["a"]}
    assert got.static_categories_.values_ == expected.static_categories_.values_


# ---- training: streamed through a buffer holding everything == in memory -----------------------------


def _same_training(a, b) -> None:
    assert a.train_loss == b.train_loss and a.refit_loss == b.refit_loss
    assert a.holdout_metric == b.holdout_metric and a.best_epoch == b.best_epoch
    assert (a.n_train, a.n_holdout, a.n_refit, a.holdout_day) == (b.n_train, b.n_holdout, b.n_refit, b.holdout_day)
    wa, wb = (load_checkpoint(r.model_path).model.state_dict() for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_streamed_bce_with_a_buffer_holding_every_row_equals_in_memory(data, tmp_path):
    """Dropout on and the refit on: every draw from every generator must be the in-memory path's."""
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM, dropout=0.2)
    train = TrainConfig(batch_size=64, epochs=3, learning_rate=1e-2, patience=3, device="cpu")
    args = (data["users"], data["item_table"])
    memory = train_model(cfg, train, data["train"], data["history"], *args, tmp_path / "memory", seed=3)
    streamed_cfg = train.model_copy(update={"shuffle_buffer": 10_000})
    files = files_of(data, tmp_path)
    streamed = train_model(cfg, streamed_cfg, files, None, *args, tmp_path / "streamed", seed=3)
    assert memory.refit and len(memory.refit_loss) == memory.best_epoch
    _same_training(streamed, memory)


def test_streamed_softmax_with_a_buffer_holding_every_row_equals_in_memory(tmp_path):
    log = planted_log(n_users=60, n_items=80, days=4)
    cfg = small_config(user_features=("pos_mean_hist_emb", "user_id"), item_features=("content", "item_base"), normalize=True, temperature=0.2)
    train = TrainConfig(objective="softmax", batch_size=32, negatives=16, epochs=2, patience=2, learning_rate=3e-3, device="cpu")
    args = (None, log["item_table"])
    memory = train_model(cfg, train, log["train"], log["history"], *args, tmp_path / "m", catalog=log["catalog"])
    files = files_of(log, tmp_path, row_group=50)
    streamed = train_model(
        cfg, train.model_copy(update={"shuffle_buffer": 5000}), files, None, *args, tmp_path / "s", catalog=log["catalog"]
    )
    assert memory.holdout_metric_name == "recall@100"
    _same_training(streamed, memory)


def test_a_small_buffer_holds_at_most_buffer_plus_three_row_groups_and_sees_every_row_once(data, tmp_path):
    cfg = small_config(user_features=ALL_USER, item_features=ALL_ITEM)
    train = TrainConfig(batch_size=16, device="cpu", shuffle_buffer=50)
    files = files_of(data, tmp_path)
    examples = StreamedExamples(files, cfg, "bce", data["users"], data["item_table"])
    inputs = PassInputs(cfg, train, None, data["users"], data["item_table"], None, torch.device("cpu"), False)
    torch.manual_seed(0)
    one = TrainingPass(inputs, examples.pass_rows(selection=False), seed=0)
    batches = list(one.batches)
    assert len(batches) == len(one.batches) == -(-len(data["train"]) // 16)
    assert one.batches.max_held <= 50 + 3 * ROW_GROUP + 16  # the buffer, the row group absorbed, two loaded ahead, a batch
    # the rows that came out are the training rows, each once: compare them with the in-memory encoding
    got = pd.DataFrame({k: torch.cat([b[k] for b in batches]).numpy() for k in ("user_idx", "item_idx", "hour", "label")})
    encoded = one.features.transform(data["train"], data["history"], data["users"]).columns
    expected = pd.DataFrame({k: encoded[k].numpy() for k in got.columns})
    key = list(got.columns)
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True), expected.sort_values(key).reset_index(drop=True))
    # the next epoch reads the row groups in another order (the rows exceed the buffer)
    again = torch.cat([b["user_idx"] for b in one.batches])
    assert not torch.equal(again, torch.cat([b["user_idx"] for b in batches]))


def test_streaming_needs_the_files_not_a_dataframe(data, tmp_path):
    with pytest.raises(ValueError, match="shuffle_buffer = 100 streams the prepared Parquet"):
        train_model(small_config(), TrainConfig(shuffle_buffer=100, device="cpu"), data["train"], data["history"],
                    data["users"], data["item_table"], tmp_path)  # fmt: skip


def test_an_error_while_loading_ahead_reaches_the_training_loop(data, tmp_path):
    """Row groups are read in a background thread: its error is raised where the batches are consumed."""
    cfg = small_config(user_features=("pos_mean_hist_emb",), item_features=("content",))
    files = files_of({**data, "history": data["history"].drop(columns="neg_items")}, tmp_path)
    train = TrainConfig(batch_size=16, device="cpu", shuffle_buffer=50)
    examples = StreamedExamples(files, cfg, "bce", None, data["item_table"])
    inputs = PassInputs(cfg, train, None, None, data["item_table"], None, torch.device("cpu"), False)
    one = TrainingPass(inputs, examples.pass_rows(selection=False), seed=0)
    with pytest.raises(KeyError, match="neg_items"):
        list(one.batches)
