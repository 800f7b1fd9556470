"""Retrieval commands: index (FAISS over the item tower), recommend (one user's top k) and serve (HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from twotower.commands.common import ExperimentOpt, fail
from twotower.config import ConfigError

RunDirArg = Annotated[Path, typer.Argument(help="A completed run directory (runs/<name>/<timestamp>).")]
KindOpt = Annotated[str, typer.Option("--kind", help="exact (FAISS IndexFlatIP, the default) or hnsw (approximate).")]
INDEX_KINDS = ("exact", "hnsw")


def _kind(kind: str) -> str:
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--kind must be one of {list(INDEX_KINDS)}, got {kind!r}")
    return kind


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
        fail(str(exc))


def _parse_day(value: str | None):
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--as-of {value!r}: expected a date YYYY-MM-DD") from None


SHOWN_COLUMNS = ("rank", "item_id", "score", "item_duration_s", "training_plays", "creator_id", "video_type", "upload_type", "tags")


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
        fail(str(exc))
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
        fail(str(exc))
    health = recommender.health()
    typer.echo(
        f"serving {health['model']} ({health['index']['kind']} index, {health['index']['source']}): "
        f"{health['catalog_items']:,} items, {health['users_known']:,} known users, day {health['serving_day']}"
    )
    configure_threads(threads)
    run_server(recommender, host, port)
