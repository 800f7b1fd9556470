"""twotower: train and evaluate two-tower retrieval models for short-video recommendation.

One config file (TOML) describes an experiment sheet: data, filters, label, features, model and the
sliding train/validation windows. `twotower run CONFIG` does everything; the other commands run one stage.
Errors print one line starting with "error:" and exit with status 2.
"""

# Each command is a thin wrapper: it parses arguments, calls library functions (which return values and
# raise on bad input), prints for people and turns the library's errors into a one-line message.

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from twotower.config import ConfigError, load_config
from twotower.config_files import is_uri

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigArg = Annotated[Path, typer.Argument(help="The experiment config file (TOML), e.g. configs/kuairand_blip_history.toml.")]
ExperimentOpt = Annotated[
    int | None, typer.Option("--experiment", "-e", help="Only this experiment id of the config (default: every one).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Where to write the results (a directory).")]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Your copy of the data (a directory or an events file, or a URI: hdfs://, s3a://, file://); "
        "replaces data.path of the config.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override one config key (a TOML value); repeatable."),
]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def prepare(
    config: ConfigArg,
    experiment: ExperimentOpt = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Where to write the results: a directory, or a URI (hdfs://, s3a://, file://).")
    ] = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an interrupted (incomplete) result in --out; a completed one is never replaced.")
    ] = False,
) -> None:
    """Prepare the data: clean, filter, label and sample the logs into training examples, history snapshots
    and the evaluation set (Parquet), and print the funnel of rows kept at each step.

    Writes prepared/<config name>/experiment_<id>/ (or --out/experiment_<id>/).
    """
    from twotower.data.prepare import prepare_experiment
    from twotower.data.validate import DataError

    try:
        cfg = load_config(config, data_path=data, overrides=set_ or ())
        experiments = [cfg.experiment(experiment)] if experiment is not None else list(cfg.experiments)
        root = out or str(Path("prepared") / cfg.name)
        for exp in experiments:
            name = f"experiment_{exp.id}"
            target = f"{root.rstrip('/')}/{name}" if is_uri(root) else Path(root) / name  # Path would fold s3a://
            result = prepare_experiment(cfg, exp, target, overwrite=overwrite)
            typer.echo(f"\nexperiment {exp.id}: funnel\n{result.funnel.table()}\nwrote {result.out_dir}")
    except (ConfigError, DataError) as exc:
        _fail(str(exc))


@app.command()
def embed(
    config: ConfigArg,
    experiment: ExperimentOpt = None,
    out: OutOpt = None,
    prepared: Annotated[
        Path | None, typer.Option("--prepared", help="What `prepare --out` wrote (default: prepared/<config name>).")
    ] = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing item_embeddings.parquet.")] = False,
) -> None:
    """Encode item content and reduce it with PCA fitted on the training window's items.

    Reads each experiment's items.parquet from the prepared directory and writes item_embeddings.parquet
    and item_embeddings.json (the report) into --out (default: the prepared directory).
    """
    from twotower.content.item_table import embed_prepared

    try:
        cfg = load_config(config, overrides=set_ or ())
        experiments = [cfg.experiment(experiment)] if experiment is not None else list(cfg.experiments)
        for exp in experiments:
            source = (prepared or Path("prepared") / cfg.name) / f"experiment_{exp.id}"
            target = source
            if out is not None:
                target = out if len(experiments) == 1 else out / f"experiment_{exp.id}"
            if (target / "item_embeddings.parquet").exists() and not overwrite:
                raise ValueError(
                    f"{target / 'item_embeddings.parquet'} exists; pass --overwrite to replace it, or --out elsewhere"
                )
            report = embed_prepared(cfg, source, target, exp.id)
            typer.echo(
                f"experiment {exp.id}: {report['items']} items, {report['encoder']} ({report['input_dim']}-d) -> "
                f"PCA {report['pca_components']} (explained variance {report['explained_variance_ratio_total']:.3f}); "
                f"wrote {report['path']}"
            )
            if "note" in report:
                typer.echo(f"note: {report['note']}")
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def metrics(
    scores: Annotated[Path, typer.Argument(help="Parquet or CSV file with columns user_id, item_id, label (0/1), score.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON to this file.")] = None,
) -> None:
    """Score any model's predictions with the sheet's ranking metrics (played re-ranking, docs/metrics.md).

    Prints the results table for your scores and for seeded random scores, with the user and row counts.
    """
    from twotower.evaluate.baselines import random_scores
    from twotower.evaluate.scores_file import read_scores, scores_metrics
    from twotower.evaluate.tables import experiment_rows, left_out_line, results_table
    from twotower.io import write_json

    try:
        frame = read_scores(scores)
        model = scores_metrics(frame)
        random = scores_metrics(frame.assign(score=random_scores(len(frame), seed=0)))
        typer.echo(results_table(experiment_rows(scores.stem, model=model, random=random), extra=True), nl=False)
        typer.echo(left_out_line(model))
        if json_out is not None:
            write_json(json_out, model.as_dict())
            typer.echo(f"wrote {json_out}")
    except (ValueError, OSError) as exc:
        _fail(str(exc))


NoReuseOpt = Annotated[
    bool, typer.Option("--no-reuse", help="Prepare and embed anew even when an earlier run had the same inputs.")
]


def _exit_for(run_dir: Path) -> None:
    """Exit 1 when some experiment failed (the tables are written all the same), so schedulers notice."""
    from twotower.runs import COMPLETED, read_status

    status = read_status(run_dir)
    if status.get("state") != COMPLETED:
        failed = status.get("failed_experiments") or []
        typer.secho(f"failed: experiment(s) {', '.join(map(str, failed))} (see their error.txt)", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="The experiment config file (TOML), e.g. configs/kuairand_blip_history.toml.")
    ] = None,
    out: OutOpt = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Finish this interrupted run directory instead of starting a new one.")
    ] = None,
    no_reuse: NoReuseOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Run the whole experiment: prepare, embed, train and evaluate every experiment of the config.

    Prints and saves the sheet's tables (model beside its baselines) in a new directory
    runs/<config name>/<timestamp>/ (or under --out); an earlier run is never overwritten. Prepared data and
    content tables of an earlier run with the same inputs are reused (--no-reuse to redo them). Exit status:
    0 when every experiment completed, 1 when some failed, 2 on bad input.
    """
    from twotower import pipeline
    from twotower.data.validate import DataError
    from twotower.distributed import world_size
    from twotower.runs import RunError
    from twotower.tracking import TrackingError

    try:
        if world_size() > 1:
            raise ConfigError("`run` is one process; under torchrun use `twotower train` (prepare and evaluate in one process)")
        if resume is not None:
            if config is not None:
                raise ConfigError("--resume takes its config from the run directory; give no CONFIG")
            run_dir = pipeline.resume(resume, reuse=not no_reuse)
        elif config is None:
            raise ConfigError("give a CONFIG file (or --resume RUN_DIR)")
        else:
            cfg = load_config(config, data_path=data, overrides=_with_mlflow(set_, mlflow))
            run_dir = pipeline.run(cfg, out_root=out or Path("runs"), reuse=not no_reuse)
    except (ConfigError, DataError, RunError, TrackingError) as exc:
        _fail(str(exc))
    _exit_for(run_dir)


@app.command()
def train(
    config: ConfigArg,
    prepared: Annotated[Path, typer.Option("--prepared", help="What `prepare --out` wrote (holds experiment_<id>/).")],
    items: Annotated[
        Path | None, typer.Option("--items", help="A content table (item_embeddings.parquet) to use instead of embedding.")
    ] = None,
    experiment: Annotated[list[int] | None, typer.Option("--experiment", "-e", help="Only these experiment ids.")] = None,
    out: OutOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train on prepared data, without preparing again: iterate on the model quickly.

    Writes a new run directory (the same files `run` writes up to the model); finish it with
    `twotower evaluate RUN_DIR`. Under `torchrun --nproc-per-node N` the N processes train one model
    together (data parallel; rank 0 writes the files); see docs/scaling.md.
    """
    from twotower import distributed
    from twotower.data.validate import DataError
    from twotower.pipeline import train_run
    from twotower.runs import RunError

    try:
        cfg = load_config(config, overrides=set_ or ())
        dist = distributed.from_env(cfg.train.device)
        try:
            run_dir = train_run(cfg, prepared, out or Path("runs"), items, experiment, dist=dist)
        finally:
            distributed.close(dist)
    except (ConfigError, DataError, RunError, ValueError) as exc:
        _fail(str(exc))
    if dist is None or dist.is_main:
        typer.echo(f"run directory: {run_dir}")


@app.command()
def evaluate(
    target: Annotated[Path, typer.Argument(help="A run directory (from `train` or `run`), or a checkpoint (model.pt).")],
    prepared: Annotated[
        Path | None, typer.Option("--prepared", help="Prepared data to evaluate on (default: the run's own).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="With a checkpoint: its experiment config.")] = None,
    experiment: ExperimentOpt = None,
    out: OutOpt = None,
) -> None:
    """Evaluate a trained model: the sheet's tables and every evaluation file `run` writes.

    With a run directory, every trained experiment is evaluated in place. With a checkpoint, --config and
    --prepared are needed, and a new run directory is written.
    """
    from twotower.pipeline import evaluate_checkpoint, evaluate_run
    from twotower.runs import RunError

    try:
        if target.is_dir():
            evaluate_run(target, prepared)
            run_dir = target
        else:
            if config is None or prepared is None:
                raise ConfigError(f"{target} is a checkpoint: give --config CONFIG and --prepared DIR")
            run_dir = evaluate_checkpoint(target, load_config(config), experiment, prepared, out or Path("runs"))
    except (ConfigError, RunError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _exit_for(run_dir)


# ---------------------------------------------------------------- the experiment series: compare, series, track

MlflowOpt = Annotated[
    str | None,
    typer.Option("--mlflow", metavar="URI", help="Log the run to MLflow at this tracking URI, e.g. file:./mlruns (replaces tracking.mlflow_uri)."),
]


def _with_mlflow(set_: list[str] | None, mlflow: str | None) -> list[str]:
    """``--set`` overrides plus ``--mlflow URI`` as ``tracking.mlflow_uri`` (quoted: any text is one string)."""
    return [*(set_ or ()), *([f"tracking.mlflow_uri={json.dumps(mlflow)}"] if mlflow else [])]


def _seed_list(seeds: str | None, configs: list[str]) -> tuple[list[int] | None, list[str]]:
    """``--seeds 0,1,2``, or ``--seeds 0 1 2`` (the shell splits it: the whole numbers that are not files among
    the CONFIG arguments continue the list)."""
    if seeds is None:
        return None, configs
    extra = [c for c in configs if c.isdigit() and not Path(c).exists()]
    try:
        values = [int(s) for s in seeds.replace(",", " ").split()] + [int(c) for c in extra]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected whole numbers, e.g. --seeds 0 1 2") from None
    return values, [c for c in configs if c not in extra]


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run directories (runs/<name>/<timestamp>), config directories (runs/<name>: its newest runs) or "
            "mlflow:<run id> (with --mlflow URI)."
        ),
    ],
    reference: Annotated[str | None, typer.Option("--reference", help="The run the others are compared with (default: the first).")] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="For a config directory: its newest completed runs of this many distinct seeds.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write compare.md, compare.json and compare.png here.")] = None,
    mlflow: MlflowOpt = None,
    per_run: Annotated[bool, typer.Option("--per-run", help="One row per run, even for seeds of one config.")] = False,
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples.")] = 2000,
) -> None:
    """Compare finished runs, with paired-bootstrap intervals over users.

    One row per config: the model's metrics averaged over experiments (mean ± sd over its seeds) and the
    difference to the reference in auc, ndcg@10, map and catalog recall@100 with a 95% paired-bootstrap
    interval over the users both runs evaluated (`*`: the interval excludes zero).
    """
    from twotower.compare.rundata import CompareError
    from twotower.compare.sources import compare_sources
    from twotower.compare.table import markdown, write_comparison
    from twotower.tracking import TrackingError

    try:
        result = compare_sources(
            runs, reference, mlflow_uri=mlflow, seeds=seeds, per_run=per_run, resamples=resamples
        )
        typer.echo(markdown(result), nl=False)
        for path in write_comparison(result, out) if out is not None else []:
            typer.echo(f"wrote {path}")
    except (CompareError, TrackingError, OSError) as exc:
        _fail(str(exc))


@app.command()
def series(
    configs: Annotated[list[str], typer.Argument(help="Config files (TOML); the first is the reference.")],
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Run each config for these seeds: --seeds 0 1 2 (or 0,1,2).")
    ] = None,
    out: OutOpt = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    mlflow: MlflowOpt = None,
) -> None:
    """Run several configs (each for several seeds with --seeds) and end with the compare table.

    Runs go to runs/<config name>/<timestamp>/ (or under --out); the comparison to <out>/_series/<timestamp>/.
    """
    from twotower.compare.rundata import CompareError
    from twotower.compare.table import markdown
    from twotower.data.validate import DataError
    from twotower.runs import RunError
    from twotower.series import run_series
    from twotower.tracking import TrackingError

    try:
        seed_list, paths = _seed_list(seeds, configs)
        result = run_series(
            [Path(p) for p in paths], seed_list, out or Path("runs"), _with_mlflow(set_, mlflow), data_path=data
        )
        typer.echo("\n" + markdown(result.comparison), nl=False)
        typer.echo(f"comparison: {result.directory}")
    except (ConfigError, DataError, RunError, CompareError, TrackingError) as exc:
        _fail(str(exc))


@app.command()
def track(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (runs/<name>/<timestamp>).")],
    mlflow: Annotated[str, typer.Option("--mlflow", metavar="URI", help="MLflow tracking URI, e.g. file:./mlruns.")],
    experiment: Annotated[str, typer.Option("--experiment", help="The MLflow experiment.")] = "twotower",
) -> None:
    """Log a finished run directory to MLflow (what `run --mlflow` does at the end of a run)."""
    from twotower.tracking import TrackingError, log_run

    try:
        typer.echo(f"mlflow run {log_run(run_dir, mlflow, experiment)} at {mlflow}")
    except (TrackingError, OSError) as exc:
        _fail(str(exc))


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the planted log (must be empty or new).")],
    users: Annotated[int, typer.Option(help="Users.")] = 3000,
    items: Annotated[int, typer.Option(help="Items.")] = 2000,
    topics: Annotated[int, typer.Option(help="Topic clusters of the content vectors.")] = 20,
    days: Annotated[int, typer.Option(help="Days of plays (the last is the validation day).")] = 14,
    seed: Annotated[int, typer.Option(help="Random seed (data and the config's seed).")] = 0,
) -> None:
    """Write a planted-signal log (known topic preferences), its truth and a ready config (planted.toml)."""
    from twotower.synth import SynthSpec, write_synth_command

    try:
        spec = SynthSpec(users=users, items=items, topics=topics, days=days, seed=seed)
        paths = write_synth_command(spec, out_dir)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {len(paths)} files to {out_dir}; run it with: twotower run {paths['config']}")


# ---------------------------------------------------------------- retrieval: index, recommend, serve

RunDirArg = Annotated[Path, typer.Argument(help="A completed run directory (runs/<name>/<timestamp>).")]
KindOpt = Annotated[str, typer.Option("--kind", help="exact (FAISS IndexFlatIP, the default) or hnsw (approximate).")]
INDEX_KINDS = ("exact", "hnsw")


def _kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--kind must be one of {list(INDEX_KINDS)}, got {kind!r}")
    return kind


@app.command()
def index(
    run_dir: RunDirArg,
    experiment: ExperimentOpt = None,
    kind: KindOpt = "exact",
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the index (default: RUN_DIR/experiment_<id>/index).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index directory.")] = False,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", min=2, help="HNSW: links per node.")] = 32,
    ef_construction: Annotated[int, typer.Option("--ef-construction", min=1, help="HNSW: build candidate list.")] = 200,
    ef_search: Annotated[int, typer.Option("--ef-search", min=1, help="HNSW: search candidate list (at least k').")] = 256,
    l2_reduction: Annotated[
        bool, typer.Option("--l2-reduction", help="HNSW: graph over the inner-product-to-L2 reduction (compare the recall).")
    ] = False,
) -> None:
    """Build the FAISS index of the item tower over the validation day's catalog, saved with its id map and
    the checkpoint's SHA-256 (loading it with another checkpoint is an error). HNSW: its recall@100 against
    exact search is printed and stored in index.json."""
    from twotower.retrieval.catalog_index import build_run_index
    from twotower.retrieval.run_model import experiment_ids, open_experiment
    from twotower.runs import RunError

    try:
        params = (
            {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search, "l2_reduction": l2_reduction}
            if _kind(kind) == "hnsw"
            else {}
        )
        ids = [experiment] if experiment is not None else experiment_ids(run_dir)
        if not ids:
            raise RunError(f"{run_dir} has no completed experiment to index")
        for exp_id in ids:
            target = out if out is None or len(ids) == 1 else out / f"experiment_{exp_id}"
            report = build_run_index(open_experiment(run_dir, exp_id), kind, target, overwrite=overwrite, **params)
            line = f"experiment {report.experiment}: {report.kind} index of {report.n_items:,} items (catalog of {report.day})"
            if report.recall is not None:
                line += f"; recall@100 against exact search {report.recall:.4f} over {report.recall_queries:,} queries"
                if report.recall < 0.9:
                    other = "without" if l2_reduction else "with"
                    line += f"\nnote: low recall; try a larger --ef-search, or {other} --l2-reduction"
            typer.echo(f"{line}\nwrote {report.directory}")
    except (ConfigError, RunError, ValueError, FileExistsError, FileNotFoundError) as exc:
        _fail(str(exc))


def _parse_day(value: str | None):
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--as-of {value!r}: expected a date YYYY-MM-DD") from None


SHOWN_COLUMNS = ("rank", "item_id", "score", "item_duration_s", "training_plays", "creator_id", "video_type", "upload_type", "tags")


@app.command()
def recommend(
    run_dir: RunDirArg,
    user: Annotated[int, typer.Option("--user", help="The user id.")],
    experiment: ExperimentOpt = None,
    k: Annotated[int, typer.Option("--k", help="How many items (1..catalog size).")] = 100,
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="DATE", help="The day (YYYY-MM-DD); the user as of its start (default: the validation day).")
    ] = None,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Keep items the user played in the lookback window.")] = False,
    hour: Annotated[int | None, typer.Option("--hour", help="Context hour 0..23 (default: see docs/retrieval.md).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (every metadata column) instead of a table.")] = False,
) -> None:
    """Recommend: one user's top k of the catalog, with scores and item metadata.

    The user's features are those training built: base features and history as of the start of the day,
    from the prepared files or computed point-in-time from the run's data; seen items are excluded. A user
    with no play in the lookback window is served as cold (the output says so).
    """
    from twotower.data.validate import DataError
    from twotower.retrieval.recommend import recommend as recommend_user
    from twotower.retrieval.run_model import open_experiment
    from twotower.runs import RunError

    try:
        run = open_experiment(run_dir, experiment)
        result = recommend_user(run, user, k, _parse_day(as_of), include_seen=include_seen, hour=hour)
    except (ConfigError, DataError, RunError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if json_out:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    dows = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    who = "cold user: no play in the lookback window, empty history" if result.cold else f"state: {result.state}"
    typer.echo(
        f"user {result.user_id}, top {len(result.items)} of the catalog of {result.day} "
        f"({dows[result.dow]}, hour {result.hour}); {who}; {result.excluded_seen} seen item(s) excluded"
    )
    shown = result.items[[c for c in SHOWN_COLUMNS if c in result.items.columns]]
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@app.command()
def serve(
    run_dir: RunDirArg,
    experiment: ExperimentOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    kind: KindOpt = "exact",
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="A saved index (default: RUN_DIR/experiment_<id>/index when it fits, else built).")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="FAISS/torch threads per request (set once).")] = 1,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn) for the run's validation day.

    GET /health, GET /recommend?user_id=&k=, POST /recommend with a history for users the service has
    never seen; the OpenAPI schema at /openapi.json. Model, index and user states are loaded once.
    """
    from twotower.data.validate import DataError
    from twotower.retrieval.run_model import open_experiment
    from twotower.retrieval.serve import run_server
    from twotower.retrieval.service import configure_threads, load_recommender
    from twotower.runs import RunError

    try:
        run = open_experiment(run_dir, experiment)
        typer.echo(f"loading experiment {run.exp.id}: catalog index and the user states of {run.val_day} ...")
        recommender = load_recommender(run, _kind(kind), index_dir)
    except (ConfigError, DataError, RunError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    health = recommender.health()
    typer.echo(
        f"serving {health['model']} ({health['index']['kind']} index, {health['index']['source']}): "
        f"{health['catalog_items']:,} items, {health['users_known']:,} known users, day {health['serving_day']}"
    )
    configure_threads(threads)
    run_server(recommender, host, port)


if __name__ == "__main__":
    app()
