"""twotower: train and evaluate two-tower retrieval models for short-video recommendation.

One config file (TOML) describes an experiment sheet: data, filters, label, features, model and the
sliding train/validation windows. `twotower run CONFIG` does everything; the other commands run one stage.
Errors print one line starting with "error:" and exit with status 2.
"""

# The commands live in twotower/commands/ (data, experiments, retrieval); each is a thin wrapper that parses
# arguments, calls library functions (which return values and raise on bad input), prints for people and
# turns the library's errors into a one-line message. This module only assembles them, in the order --help
# lists them. It also runs as a file (`python -m twotower.cli`, torchrun, Spark's TorchDistributor).

from __future__ import annotations

import typer

from twotower.commands import data, experiments, retrieval

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

COMMANDS = (
    data.prepare,
    data.embed,
    data.metrics,
    experiments.run,
    experiments.train,
    experiments.evaluate,
    experiments.compare,
    experiments.series,
    experiments.track,
    data.synth,
    retrieval.index,
    retrieval.recommend,
    retrieval.serve,
)
for command in COMMANDS:
    app.command()(command)


if __name__ == "__main__":
    app()
