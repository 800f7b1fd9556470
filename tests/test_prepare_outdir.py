"""The prepare output directory (issue 10): a killed prepare leaves no truncated file under a final name and
an interrupted marker; a rerun says so and offers --overwrite; a completed result is never replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.tinylog import tiny_config_dict, write_tiny_log
from twotower.cli import app
from twotower.config import parse_config
from twotower.data.prepare import prepare_experiment
from twotower.data.validate import DataError

ROOT = Path(__file__).resolve().parents[1]

# Runs prepare in a child process that SIGKILLs itself in the middle of writing eval.parquet (the second
# Parquet file), after putting half a file at whatever path the writer was given.
KILLER = textwrap.dedent(
    """
    import os, signal, sys, json
    import ibis.expr.types as ir
    from tests.tinylog import tiny_config_dict
    from twotower.config import parse_config
    from twotower.data.prepare import prepare_experiment

    original, calls = ir.Table.to_parquet, []
    def to_parquet(self, path, *args, **kwargs):
        calls.append(str(path))
        if len(calls) == 2:
            with open(path, "wb") as handle:
                handle.write(b"PAR1 half a file")
            print(json.dumps(calls), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, path, *args, **kwargs)
    ir.Table.to_parquet = to_parquet
    cfg = parse_config(tiny_config_dict(sys.argv[1], sys.argv[2]))
    prepare_experiment(cfg, cfg.experiments[0], __import__("pathlib").Path(sys.argv[3]), progress=False)
    """
)


def _config_file(tmp_path: Path, events: Path, items: Path) -> Path:
    path = tmp_path / "tiny.toml"
    data = f'[data]\nadapter = "generic"\npath = "{events}"\nitems_path = "{items}"\ntimezone = "Asia/Shanghai"\n'
    rest = (
        'name = "tiny"\nseed = 7\n[filters.client]\nmin_interactions = 3\nmax_interactions = 5\n[features]\nsmoothing = 5.0\n'
        '[[experiments]]\nid = 1\ntrain_start = 2022-05-01\ntrain_end = 2022-05-03\nval_date = 2022-05-04\n'
    )
    path.write_text(rest.replace("[filters.client]", data + "[filters.client]"))
    return path


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A prepare killed while writing eval.parquet: (out dir, paths the writer was given, data files)."""
    root = tmp_path_factory.mktemp("killed")
    events, items = write_tiny_log(root / "data")
    out = root / "out"
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", KILLER, str(events), str(items), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    return out, json.loads(done.stdout.strip().splitlines()[-1]), (events, items), root


def test_a_killed_prepare_leaves_no_truncated_file_under_a_final_name(killed):
    out, written, _, _ = killed
    # the writer never got a final name: each Parquet file went to a temporary name in the same directory
    assert [Path(p).parent for p in written] == [out, out]
    assert [Path(p).name.split(".")[1] for p in written] == ["train", "eval"]
    assert all(Path(p).name.startswith(".") and ".tmp." in p for p in written)
    assert len(pd.read_parquet(out / "train.parquet")) > 0  # the file written before the kill is complete
    assert not (out / "eval.parquet").exists() and not (out / "funnel.json").exists()
    assert json.loads((out / "prepare.json").read_text())["state"] == "running"


def test_rerun_into_an_interrupted_result_offers_overwrite(killed, tmp_path):
    out, _, (events, items), _ = killed
    cfg = parse_config(tiny_config_dict(events, items))
    with pytest.raises(DataError, match=r"out holds an interrupted prepare \(started .*, never completed\); pass --overwrite to replace it"):
        prepare_experiment(cfg, cfg.experiments[0], out, progress=False)
    prepare_experiment(cfg, cfg.experiments[0], out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "catalog.parquet", "eval.parquet", "funnel.json", "history.parquet", "items.parquet", "popularity.parquet",
        "prepare.json", "retrieval_targets.parquet", "retrieval_users.parquet", "seen.parquet", "train.parquet",
    ]  # the temporary files of the killed run are gone
    marker = json.loads((out / "prepare.json").read_text())
    assert marker["state"] == "completed" and marker["experiment"] == 1 and "eval.parquet" in marker["files"]
    # the command line says the same in one line and exits 2; with --overwrite it replaces the result
    cli_out = tmp_path / "cli"
    (cli_out / "experiment_1").mkdir(parents=True)
    (cli_out / "experiment_1" / "prepare.json").write_text('{"state": "running", "started": "2024-03-01T12:00:00+00:00"}')
    (cli_out / "experiment_1" / ".eval.0123456789ab.tmp.parquet").write_bytes(b"PAR1")
    config = _config_file(tmp_path, events, items)
    result = CliRunner().invoke(app, ["prepare", str(config), "--out", str(cli_out)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "holds an interrupted prepare (started 2024-03-01T12:00:00+00:00, never completed); pass --overwrite" in result.output
    result = CliRunner().invoke(app, ["prepare", str(config), "--out", str(cli_out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "local days and hours in time zone Asia/Shanghai (data.timezone)" in result.output
    assert "- engine: duckdb v" in result.output and "threads, memory limit" in result.output
    for name in ("train", "eval", "history", "items", "popularity"):  # the same as the resumed run's
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), pd.read_parquet(cli_out / "experiment_1" / f"{name}.parquet"))
    assert not list(cli_out.glob("experiment_1/.*"))


def test_a_completed_result_is_never_replaced(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    cfg = parse_config(tiny_config_dict(events, items))
    prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", progress=False)
    before = (tmp_path / "out" / "train.parquet").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"out already holds prepared data \(completed .*\); choose another --out \(results are never overwritten\)"):
            prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", overwrite=overwrite, progress=False)
    assert (tmp_path / "out" / "train.parquet").read_bytes() == before


def test_other_files_are_never_touched(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    cfg = parse_config(tiny_config_dict(events, items))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"out is not empty and holds no prepare.json \(not a prepare result\); choose a new or empty --out"):
            prepare_experiment(cfg, cfg.experiments[0], tmp_path / "out", overwrite=overwrite, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"--out .*file is a file; choose a directory"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "file", progress=False)


def test_a_failed_prepare_leaves_nothing_behind(tmp_path):
    events, items = write_tiny_log(tmp_path / "data")
    raw = tiny_config_dict(events, items)
    raw["experiments"] = [{"id": 1, "train_start": "2022-05-02", "train_end": "2022-05-03", "val_date": "2022-05-09"}]
    cfg = parse_config(raw)
    with pytest.raises(DataError, match="no events in the validation day"):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "new" / "out", progress=False)
    assert not (tmp_path / "new" / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        prepare_experiment(cfg, cfg.experiments[0], tmp_path / "empty", progress=False)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # it existed before: kept
