"""``compare`` on hand-built run directories: the values, the users it pairs, seeds, states, the files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.runfiles import write_run
from twotower.compare import CompareError, compare_runs, expand_run_args
from twotower.compare.table import markdown, write_comparison
from twotower.evaluate.bootstrap import paired_bootstrap


def _row(comparison, label):
    return next(r for r in comparison.rows if r.label == label)


def test_difference_on_identical_users_by_hand(tmp_path):
    ref = write_run(tmp_path, "base", played={1: {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}})
    other = write_run(tmp_path, "better", played={1: {1: 0.6, 2: 0.6, 3: 0.8, 4: 0.8}})
    result = compare_runs([ref, other], resamples=500)
    assert [r.label for r in result.rows] == ["base", "better"] and result.reference == "base"
    row = _row(result, "better")
    diff = row.differences["auc"].interval
    assert diff.estimate == pytest.approx(0.05)  # (0.1 + 0 + 0.1 + 0) / 4
    assert diff.n_users == (4,) and row.played_users == {1: 4}
    # the bootstrap of the 4 differences (0.1, 0, 0.1, 0) with the same seed
    assert (diff.low, diff.high) == pytest.approx(
        (paired_bootstrap([np.array([0.1, 0.0, 0.1, 0.0])], 500).low, paired_bootstrap([np.array([0.1, 0.0, 0.1, 0.0])], 500).high)
    )
    assert row.metrics["auc"] == (pytest.approx(0.7), None)  # mean of metrics.json, one seed: no sd
    assert row.differences["map"].interval.estimate == pytest.approx(0.025)  # the other metrics are auc / 2
    assert row.differences["recall@100"].interval is None  # no retrieval files: catalog n/a
    assert _row(result, "base").played_users == {1: 4}


def test_runs_with_other_evaluation_sets_pair_shared_users_and_lists(tmp_path):
    ref = write_run(tmp_path, "base", played={1: {u: 0.1 * u for u in range(1, 7)}}, catalog={1: {u: 0.2 for u in range(1, 6)}})
    other = write_run(
        tmp_path,
        "label08",
        played={1: {u: 0.1 * u + 0.05 for u in range(3, 9)}},
        lists={1: {4: 999}},  # user 4 was evaluated on another list: not paired
        catalog={1: {u: 0.3 for u in range(2, 7)}},
        extra={"label": {"fraction_watch_above": 0.8}},
    )
    result = compare_runs([ref, other], resamples=200)
    row = _row(result, "label08")
    assert row.played_users == {1: 3}  # users 3, 5, 6
    assert row.differences["auc"].interval.estimate == pytest.approx(0.05)
    assert row.catalog_users == {1: 4}  # users 2..5
    assert row.differences["recall@100"].interval.estimate == pytest.approx(0.1)
    assert row.metrics["catalog recall@100"] == (pytest.approx(0.3), None)
    assert any("label.fraction_watch_above" in n and "label08" in n for n in result.notes)
    text = markdown(result)
    assert "| 3 | 4 |" in text  # users (played), users (catalog)


def test_two_experiments_average_per_experiment_means(tmp_path):
    ref = write_run(tmp_path, "a", played={1: {1: 0.5, 2: 0.5}, 2: {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}})
    other = write_run(tmp_path, "b", played={1: {1: 0.7, 2: 0.7}, 2: {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}})
    diff = _row(compare_runs([ref, other], resamples=100), "b").differences["auc"]
    assert diff.interval.estimate == pytest.approx(0.1)  # (0.2 + 0) / 2, not the pooled 0.2 * 2 / 6
    assert diff.experiments == [1, 2] and diff.interval.n_users == (2, 4)


def test_identical_runs_are_zero_with_an_interval_of_zero(tmp_path):
    a = write_run(tmp_path, "same", stamp="1", catalog={1: {1: 0.2, 2: 0.4}})
    b = write_run(tmp_path, "same", stamp="2", catalog={1: {1: 0.2, 2: 0.4}})
    row = compare_runs([a, b], per_run=True).rows[1]
    for metric in ("auc", "ndcg@10", "map", "recall@100"):
        i = row.differences[metric].interval
        assert (i.estimate, i.low, i.high, i.excludes_zero) == (0.0, 0.0, 0.0, False)
    assert "+0.0000 [+0.0000, +0.0000]" in markdown(compare_runs([a, b], per_run=True))


def test_seeds_form_one_row_with_mean_sd_and_pair_by_seed(tmp_path):
    users = range(1, 41)
    ref = [write_run(tmp_path, "base", seed=s, stamp=f"r{s}", played={1: {u: 0.5 + 0.01 * s for u in users}}) for s in (0, 1)]
    new = [write_run(tmp_path, "new", seed=s, stamp=f"n{s}", played={1: {u: 0.6 + 0.02 * s for u in users}}) for s in (1, 2)]
    result = compare_runs([*ref, *new], resamples=200)
    base, row = result.rows
    assert base.seeds == [0, 1] and row.seeds == [1, 2] and row.n_pairs == 2
    assert base.metrics["auc"][0] == pytest.approx(0.505) and base.metrics["auc"][1] == pytest.approx(np.std([0.5, 0.51], ddof=1))
    diff = row.differences["auc"]
    # seed 1 pairs with seed 1 (0.62 - 0.51); the rest in seed order: 2 with 0 (0.64 - 0.50)
    assert diff.seeds == [(1, 1), (2, 0)]
    assert diff.per_pair == pytest.approx([0.11, 0.14])
    assert diff.sd == pytest.approx(np.std([0.11, 0.14], ddof=1))
    assert diff.interval.estimate == pytest.approx(0.125)
    assert "0.5050 ± 0.0071" in markdown(result) and "+0.1250 ± 0.0212 [" in markdown(result)


def test_reference_option_and_same_name_other_config(tmp_path):
    a = write_run(tmp_path, "x", stamp="1")
    b = write_run(tmp_path, "x", stamp="2", extra={"model": {"dropout": 0.3}})
    result = compare_runs([a, b], reference=b)
    assert [r.label for r in result.rows] == ["x [2]", "x"] and result.reference == "x [2]"
    assert result.rows[0].is_reference and not result.rows[1].is_reference


def test_other_days_are_not_paired(tmp_path):
    a = write_run(tmp_path, "a")
    b = write_run(tmp_path, "b")
    config = (b / "config.toml").read_text().replace("2022-05-04", "2022-05-05")
    (b / "config.toml").write_text(config)
    result = compare_runs([a, b])
    assert result.rows[1].differences["auc"].interval is None
    assert any("experiment 1 has other days" in n for n in result.notes)


@pytest.mark.parametrize(("state", "message"), [("running", "it was interrupted or is still running"), ("failed", "some experiment failed")])
def test_unfinished_runs_are_refused(tmp_path, state, message):
    good = write_run(tmp_path, "good")
    bad = write_run(tmp_path, "bad", state=state)
    with pytest.raises(CompareError, match=f"not a completed run \\(state: {state}\\): {message}"):
        compare_runs([good, bad])


def test_legacy_run_without_status_is_taken_as_completed_and_said(tmp_path):
    good = write_run(tmp_path, "good")
    legacy = write_run(tmp_path, "legacy", state=None)
    result = compare_runs([good, legacy])
    assert result.notes == [f"taken as completed without status.json (written before runs carried one): {legacy}"]
    (legacy / "summary.json").unlink()
    with pytest.raises(CompareError, match="state: missing.*is it a twotower run directory"):
        compare_runs([good, legacy])


def test_config_directory_stands_for_its_newest_runs_of_distinct_seeds(tmp_path):
    old0 = write_run(tmp_path, "c", seed=0, stamp="20240101-000000")
    one = write_run(tmp_path, "c", seed=1, stamp="20240102-000000")
    new0 = write_run(tmp_path, "c", seed=0, stamp="20240103-000000")
    write_run(tmp_path, "c", seed=2, stamp="20240104-000000", state="running")  # not completed: skipped
    assert expand_run_args([tmp_path / "c"]) == [new0]
    assert expand_run_args([tmp_path / "c"], seeds=2) == [new0, one]
    assert expand_run_args([old0]) == [old0]
    with pytest.raises(CompareError, match="2 completed run\\(s\\) of distinct seeds; --seeds asks for 3"):
        expand_run_args([tmp_path / "c"], seeds=3)
    with pytest.raises(CompareError, match="neither a run directory nor a directory of runs"):
        expand_run_args([tmp_path])


def test_files_are_written_once(tmp_path):
    users = range(1, 60)
    a = write_run(tmp_path, "a", played={1: {u: 0.5 for u in users}})
    b = write_run(tmp_path, "b", played={1: {u: 0.6 + 0.001 * (u % 5) for u in users}})
    result = compare_runs([a, b])
    written = write_comparison(result, tmp_path / "out")
    assert [p.name for p in written] == ["compare.md", "compare.json", "compare.png"]
    text = (tmp_path / "out" / "compare.md").read_text()
    header = text.splitlines()[2]
    for column in ("| config | seeds | experiments | auc | ndcg@10 | map | mrr | recall@all_pos | catalog recall@100 |",
                   "| users (played) | users (catalog) | Δ auc | Δ ndcg@10 | Δ map | Δ catalog recall@100 |"):
        assert column in header
    assert "+0.1020 [" in text and "] * |" in text  # excludes zero
    payload = json.loads((tmp_path / "out" / "compare.json").read_text())
    diff = payload["rows"][1]["differences"]["auc"]
    assert diff["estimate"] == pytest.approx(np.mean([0.1 + 0.001 * (u % 5) for u in users])) and diff["excludes_zero"] and diff["n_users"] == [59]
    assert payload["rows"][1]["differences"]["recall@100"]["estimate"] is None
    assert payload["rows"][1]["metrics"]["auc"]["mean"] == pytest.approx(0.5 + diff["estimate"]) and "recall@gt_5" in payload["rows"][1]["metrics"]
    with pytest.raises(CompareError, match="already holds compare.md"):
        write_comparison(result, tmp_path / "out")
