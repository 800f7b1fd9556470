"""``twotower metrics SCORES [--json OUT]`` and the results-table formatter."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app
from twotower.evaluate.metrics import ranking_metrics
from twotower.evaluate.scores_file import read_scores
from twotower.evaluate.tables import experiment_rows, results_table

SEED_HEADER = (
    "| Experiment No | auc | avg_prec@10 | map | mrr | ndcg@5 | ndcg@10 | recall@5 | recall@10 | recall@50 "
    "| recall@100 | recall@gt_5 | recall@gt_100 | recall@all_pos |"
)

# the hand-worked list of test_metrics.py (user 1) plus an all-positive user 2 and an all-negative user 3
FRAME = pd.DataFrame(
    {
        "user_id": [1, 1, 1, 1, 1, 1, 2, 2, 3],
        "item_id": [13, 11, 15, 10, 14, 12, 1, 2, 3],
        "label": [0, 0, 1, 1, 0, 1, 1, 1, 0],
        "score": [0.6, 0.8, 0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.1],
        "extra": ["a"] * 9,
    }
)


@pytest.fixture(params=["parquet", "csv"])
def scores_path(request, tmp_path):
    path = tmp_path / f"scores.{request.param}"
    if request.param == "parquet":
        FRAME.to_parquet(path)
    else:
        FRAME.to_csv(path, index=False)
    return path


def test_cli_prints_table_and_writes_json(scores_path, tmp_path):
    out = tmp_path / "out" / "metrics.json"
    result = CliRunner().invoke(app, ["metrics", str(scores_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(SEED_HEADER[:-1])  # then the extra columns
    assert lines[2].startswith("| scores (model) | 0.56 | 0.72 | 0.72 | 0.50 | 0.70 | 0.87 |")
    assert "| 0.667 | n/a | 0.667 |" in lines[2]
    assert lines[3].startswith("| scores (random) |")
    assert "evaluated 1 of 3 users (6 of 9 rows); left out: 1 all positive, 1 all negative" in result.output
    data = json.loads(out.read_text())
    assert data["auc"] == pytest.approx(5 / 9) and data["map"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert data["recall@gt_100"] is None and data["n_users_recall@gt_100"] == 0
    assert data["n_users_recall@gt_5"] == 1
    assert (data["n_users"], data["n_rows"], data["positive_share"]) == (1, 6, 0.5)
    assert (data["n_users_left_out_all_positive"], data["n_users_left_out_all_negative"]) == (1, 1)
    assert data["global_auc"] == pytest.approx(5 / 9)


def test_cli_without_json(scores_path):
    result = CliRunner().invoke(app, ["metrics", str(scores_path)])
    assert result.exit_code == 0 and "wrote" not in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["label"]), "missing column(s) 'label'"),
        (lambda f: f.drop(columns=["score", "item_id"]), "missing column(s) 'item_id', 'score'"),
        (lambda f: f.assign(label=[0, 1, 2, 1, 0, 1, 1, 1, 0]), "column 'label' must be binary"),
        (lambda f: f.assign(label=[0, 1, 0.5, 1, 0, 1, 1, 1, 0]), "column 'label' must be binary"),
        (lambda f: f.assign(score=[0.1, np.nan] + [0.2] * 7), "column 'score' must be finite"),
        (lambda f: f.assign(score=[0.1, np.inf] + [0.2] * 7), "column 'score' must be finite"),
        (lambda f: f.assign(user_id=[None, 1, 1, 1, 1, 1, 2, 2, 3]), "column 'user_id' has 1 missing"),
        # user 1 twice with item 13 (and user 2 twice with item 1): would count twice in recall and avg_prec
        (lambda f: f.assign(item_id=[13, 13, 15, 10, 14, 12, 1, 1, 3]), "2 (user_id, item_id) pair(s) appear on more than one row, e.g. (1, 13), (2, 1)"),
    ],
)
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_clear_errors(tmp_path, change, message, fmt):
    path = tmp_path / f"bad.{fmt}"
    bad = change(FRAME.copy())
    bad.to_parquet(path) if fmt == "parquet" else bad.to_csv(path, index=False)
    with pytest.raises(ValueError) as info:
        read_scores(path)
    assert message in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(app, ["metrics", str(path)])
    assert result.exit_code == 2 and "error:" in result.output and message in result.output


def test_json_into_an_unwritable_place_names_the_option(tmp_path):
    scores = tmp_path / "scores.parquet"
    FRAME.to_parquet(scores)
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["metrics", str(scores), "--json", str(tmp_path / "afile" / "m.json")])
    assert result.exit_code == 2
    assert f"error: cannot write --json {tmp_path / 'afile' / 'm.json'}: " in result.output
    assert "choose a writable path" in result.output and ".tmp" not in result.output


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_scores(tmp_path / "nope.parquet")
    other = tmp_path / "scores.xlsx"
    other.write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_scores(other)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(ValueError, match="cannot read scores"):
        read_scores(broken)


def test_results_table_formats_like_the_seed():
    model = ranking_metrics(FRAME.user_id, FRAME.item_id, FRAME.label, FRAME.score)
    rows = experiment_rows(1, model=model, random=model.as_dict(), popularity=model)
    table = results_table(rows)
    lines = table.splitlines()
    assert lines[0] == SEED_HEADER
    assert lines[1] == "|" + "|".join(["---"] * 14) + "|"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1 (model)", "| 1 (random)", "| 1 (popularity)"]
    # two decimals, three for recall@gt_N / recall@all_pos, n/a when no user qualifies
    assert lines[2] == (
        "| 1 (model) | 0.56 | 0.72 | 0.72 | 0.50 | 0.70 | 0.87 | 0.67 | 1.00 | 1.00 | 1.00 | 0.667 | n/a | 0.667 |"
    )
    extra = results_table(rows, extra=True).splitlines()
    assert extra[0].endswith(
        "| recall@all_pos | global_auc | users | rows | positive share | users gt_5 | users gt_100 |"
    )
    assert extra[2].endswith("| 0.667 | n/a | 0.667 | 0.556 | 1 | 6 | 0.500 | 1 | 0 |")


def test_results_table_nan_is_not_available():
    row = {"auc": math.nan, "map": None, "mrr": 0.2}
    line = results_table([("2 (model)", row)]).splitlines()[2]
    assert line.startswith("| 2 (model) | n/a | n/a | n/a | 0.20 |")
