"""The README's "Bring your own data" example runs as written.

The README shows a config (the block after the marker ``<!-- tests/test_readme.py: my_platform.toml -->``)
for the files `twotower synth my_logs` writes. This test writes the same files (fewer users and items, the
same days, so the config's dates hold), saves the README's block as my_logs/my_platform.toml unchanged and
runs `twotower run` on it with two epochs.
"""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from twotower.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_readme.py: my_platform.toml -->"


def readme_config() -> str:
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, f"README.md lost the marker {MARKER}"
    block = re.search(r"```toml\n(.*?)```", text[text.index(MARKER) :], flags=re.S)
    assert block is not None, "no ```toml block after the marker"
    return block.group(1)


def test_readme_example_config_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["synth", "my_logs", "--users", "400", "--items", "150"])
    assert made.exit_code == 0, made.output
    config = Path("my_logs/my_platform.toml")
    config.write_text(readme_config(), encoding="utf-8")
    result = runner.invoke(app, ["run", str(config), "--out", "runs", "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output
    [run_dir] = Path("runs/my_platform").iterdir()
    assert (run_dir / "experiment_1" / "retrieval.json").is_file()
    assert (run_dir / "tables.md").is_file()
