"""``prepare``: from raw logs to leakage-free training examples, history snapshots and the evaluation set.

The flow, one function per step (each an Ibis expression, run on DuckDB or Spark)::

    read → clean (invalid rows, exact duplicates) → local day/hour + label
         → training window → item filter → client filter → 5:5 sampling + weights ─┐
         → validation day → one row per (user, item) → users with both labels ──────┤
                                  base features and history as of each row's day ──┴→ Parquet
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.types as ir

from twotower.config import Config, ExperimentConfig
from twotower.data.catalog import catalog_by_day, item_attributes, retrieval_sets
from twotower.data.clean import add_local_time, canonical_events, clean_events, day_date, day_number
from twotower.data.engine import open_engine
from twotower.data.evalset import evaluable, played_rows
from twotower.data.features import global_priors, join_key_stats, key_stats_by_day
from twotower.data.filters import filter_clients, filter_items
from twotower.data.funnel import Funnel
from twotower.data.history import history_snapshots
from twotower.data.ingest import Source, read_source, used_flags
from twotower.data.outdir import claim, complete, release, write_parquet
from twotower.data.sampling import sample_ratio, sample_weight
from twotower.data.storage import Location, locate
from twotower.data.validate import DataError, float64
from twotower.progress import Stages

STEPS = (
    "read and clean",
    "filters and sampling",
    "evaluation set",
    "base features",
    "write examples",
    "catalog and retrieval sets",
    "history snapshots",
    "items, users, popularity",
)
ITEM_KEEP = ("plays", "pos_rate", "mean_fraction", "likes", "shares")
USER_KEEP = ("plays", "pos_rate", "mean_watch_s")
FEATURE_KEYS = (("item_id", "item", ITEM_KEEP), ("creator_id", "creator", ITEM_KEEP), ("user_id", "user", USER_KEEP))
ALL_KEYS, ITEM_KEYS, USER_KEYS = ("item_id", "creator_id", "user_id"), ("item_id", "creator_id"), ("user_id",)


@dataclass(frozen=True)
class PrepareResult:
    out_dir: str | Path  # as given: a local path or a URI
    funnel: Funnel


def load_events(con: ibis.BaseBackend, cfg: Config, funnel: Funnel) -> tuple[ir.Table, Source]:
    """Read the source, record the raw count, clean, add local time, label and creator; cached."""
    source = read_source(con, cfg.data, used_flags(cfg))
    funnel.notes["time zone"] = cfg.data.timezone_note()
    funnel.notes.update(source.notes)
    funnel.record("raw", source.events)
    cleaned = clean_events(source.events, funnel)
    local = add_local_time(cleaned.events, cfg.data.local_timezone, (cleaned.first_ms, cleaned.last_ms))
    events = canonical_events(local, cfg.label)
    if source.items is not None:
        creators = source.items.select("item_id", "creator_id")
        events = events.left_join(creators, "item_id").drop("item_id_right")
        events = events.mutate(creator_id=ibis.coalesce(events.creator_id, -1))
    else:
        events = events.mutate(creator_id=ibis.literal(-1, type="int64"))
    events = events.cache()
    step = funnel.record("cleaned (valid, deduplicated)", events)
    funnel.drop("exact duplicate", cleaned.valid_rows - step.rows)
    return events, source


def select_window(events: ir.Table, first: dt.date, last: dt.date, what: str) -> ir.Table:
    """Rows of days first..last; an empty window stops with the requested and the present dates."""
    window = events.filter(events.day_n.between(day_number(first), day_number(last)))
    if window.count().execute() == 0:
        # an aggregate: the first and last day and how many there are, not every row's day
        span = events.aggregate(lo=events.day_n.min(), hi=events.day_n.max(), n=events.day_n.nunique())
        row = span.to_pyarrow().to_pylist()[0]
        present = f"{day_date(row['lo'])} .. {day_date(row['hi'])} ({row['n']} days)" if row["n"] else "none"
        raise DataError(f"no events in the {what} {first} .. {last}; the data has days {present}")
    return window


def training_examples(train: ir.Table, cfg: Config, funnel: Funnel) -> tuple[ir.Table, ir.Table]:
    """Filter (items, then clients) and sample; returns (filtered rows, sampled weighted examples)."""
    items_kept = filter_items(train, cfg.filters)
    funnel.record(f"item filter (>= {cfg.filters.item.min_interactions} plays)", items_kept)
    client = cfg.filters.client
    filtered = filter_clients(items_kept, cfg.filters).cache()
    step = funnel.record(
        f"client filter ({client.min_interactions}..{client.max_interactions} plays, "
        f">= {client.min_positives} pos, >= {client.min_negatives} neg)",
        filtered,
    )
    if step.rows == 0:
        raise DataError("no training rows are left after the item and client filters")
    threshold = cfg.label.fraction_watch_above
    watched = filtered.fraction_watch > threshold if threshold is not None else ibis.literal(False)
    weighted = filtered.mutate(weight=sample_weight(filtered, cfg.sample_weight, watched).cast("float64"))
    examples = sample_ratio(weighted, cfg.sampling, cfg.seed).cache()
    funnel.record(f"sampled {cfg.sampling.positive}:{cfg.sampling.negative}", examples)
    return filtered, examples


def evaluation_set(val: ir.Table, filtered: ir.Table, funnel: Funnel) -> ir.Table:
    """The validation day's played re-ranking rows, flagged when the item is unseen in training."""
    rows, left_out = evaluable(played_rows(val))
    seen = filtered.select("item_id").distinct().mutate(seen=ibis.literal(1))
    rows = rows.left_join(seen, "item_id").drop("item_id_right")
    rows = rows.mutate(unseen_item=rows.seen.isnull().cast("int8")).drop("seen").cache()
    step = funnel.record("evaluation set (users with >= 1 pos and >= 1 neg)", rows)
    unseen = rows.unseen_item.cast("float64").mean().execute() if step.rows else None
    funnel.notes["evaluation users left out"] = left_out
    funnel.notes["evaluation share of rows with items unseen in training"] = unseen
    return rows


@dataclass(frozen=True)
class BaseFeatureTables:
    """Point-in-time feature tables per (key, day) for the days the rows need, computed once."""

    priors: ir.Table
    by_key: dict[str, ir.Table]
    items: ir.Table | None


def base_feature_tables(events: ir.Table, items: ir.Table | None, cfg: Config, days: ir.Table) -> BaseFeatureTables:
    """The global priors and the per-(key, day) statistics for every day in ``days`` (cached)."""
    lookback, smoothing = cfg.history.lookback_days, cfg.features.smoothing
    priors = global_priors(events, days, lookback).cache()
    by_key = {key: key_stats_by_day(events, key, prefix, days, priors, lookback, smoothing).cache() for key, prefix, _ in FEATURE_KEYS}
    return BaseFeatureTables(priors, by_key, items)


def add_base_features(rows: ir.Table, tables: BaseFeatureTables, keys: tuple[str, ...] = ALL_KEYS) -> ir.Table:
    """Attach the base features of ``keys`` (user, item, creator) as of each row's day; with ``item_id``
    also the item's age and duration."""
    for key, prefix, keep in FEATURE_KEYS:
        if key in keys:
            rows = join_key_stats(rows, tables.by_key[key], key, prefix, tables.priors, keep)
    if "item_id" not in keys:
        return rows
    if tables.items is not None:
        upload = tables.items.select("item_id", upload_day=tables.items.upload_date.epoch_days())
        rows = rows.left_join(upload, "item_id").drop("item_id_right")
        rows = rows.mutate(item_age_days=ibis.coalesce(rows.day_n - rows.upload_day, -1).cast("float64")).drop("upload_day")
    else:
        rows = rows.mutate(item_age_days=float64(-1.0))
    return rows.mutate(item_duration_s=rows.duration_ms / 1000.0)


def item_table(events: ir.Table, items: ir.Table | None, filtered: ir.Table) -> ir.Table:
    """Every item of the items table and every item played in the experiment's days, with its side
    information and ``in_train`` (so the content table covers the whole catalog)."""
    played = events.select("item_id").distinct()
    if items is not None:
        played = items.select("item_id").union(played).distinct()
        played = played.left_join(items, "item_id").drop("item_id_right")
    in_train = filtered.select("item_id").distinct().mutate(in_train=ibis.literal(True))
    table = played.left_join(in_train, "item_id").drop("item_id_right")
    return table.mutate(in_train=ibis.coalesce(table.in_train, False))


def write_catalog_and_retrieval_sets(
    all_events: ir.Table,
    events: ir.Table,
    days: ir.Table,
    base_tables: BaseFeatureTables,
    val_day: int,
    cfg: Config,
    out_dir: Location,
    funnel: Funnel,
) -> ir.Table:
    """Write catalog.parquet (every day in ``days``), retrieval_users/targets and seen.parquet (the
    validation day); count them in the funnel notes; return the retrieval users (cached)."""
    attributes = item_attributes(all_events, base_tables.items)
    catalog = catalog_by_day(attributes, days, lambda rows: add_base_features(rows, base_tables, ITEM_KEYS))
    catalog = catalog.drop("duration_ms").cache()
    by_day = cfg.data.partition_by_day
    write_parquet(catalog, out_dir / "catalog.parquet", ("day", "item_id"), by_day)
    sets = retrieval_sets(events, val_day, cfg.history.lookback_days, catalog.filter(catalog.day_n == val_day))
    users = add_base_features(sets.users, base_tables, USER_KEYS).cache()
    write_parquet(users, out_dir / "retrieval_users.parquet", ("user_id",), by_day)
    write_parquet(sets.targets, out_dir / "retrieval_targets.parquet", ("user_id", "item_id"), by_day)
    write_parquet(sets.seen, out_dir / "seen.parquet", ("user_id", "item_id"), by_day)
    targets = sets.targets
    counts = targets.aggregate(
        users=targets.user_id.nunique(),
        positives=targets.count(),
        outside_catalog=(~targets.in_catalog).sum(),
        seen=(targets.in_catalog & targets.seen).sum(),
    ).to_pyarrow().to_pylist()[0]
    per_day = catalog.group_by("day_n").aggregate(n=catalog.count()).order_by("day_n").to_pyarrow().to_pydict()
    funnel.notes["catalog items per day"] = {str(day_date(d)): n for d, n in zip(per_day["day_n"], per_day["n"], strict=True)}
    funnel.notes["retrieval"] = {
        "users with a positive play": int(counts["users"] or 0),
        "positive (user, item) pairs": int(counts["positives"] or 0),
        "targets outside the catalog (unreachable)": int(counts["outside_catalog"] or 0),
        "targets removed as already seen": int(counts["seen"] or 0),
    }
    return users


def prepare_experiment(
    cfg: Config, exp: ExperimentConfig, out_dir: str | Path, overwrite: bool = False, progress: bool = True
) -> PrepareResult:
    """Write train/eval/history/items/users/popularity Parquet files and funnel.json into ``out_dir``.

    ``out_dir`` (a local path or a URI) must be new, empty or (with ``overwrite``) an interrupted result; a
    completed one is never replaced (see ``outdir.py``). On an error nothing is left behind;
    ``prepare.json`` marks completion.
    """
    info = {"config": cfg.name, "experiment": exp.id}
    location = locate(out_dir)
    created = claim(location, overwrite, info)
    try:
        funnel = _prepare_into(cfg, exp, location, progress)
    except BaseException:
        release(location, created)
        raise
    complete(location, info)
    return PrepareResult(out_dir, funnel)


def _prepare_into(cfg: Config, exp: ExperimentConfig, out_dir: Location, progress: bool) -> Funnel:
    step = Stages(f"prepare experiment {exp.id}", STEPS, enabled=progress)
    funnel = Funnel()
    engine = open_engine(cfg.data)
    funnel.notes["engine"] = engine.note
    all_events, source = load_events(engine.con, cfg, funnel)
    step("read and clean")
    lookback_start = exp.train_start - dt.timedelta(days=cfg.history.lookback_days)
    events = select_window(all_events, lookback_start, exp.val_date, "experiment's days (lookback included)")
    train = select_window(events, exp.train_start, exp.train_end, "training window")
    val = select_window(events, exp.val_date, exp.val_date, "validation day")
    funnel.record(f"training window {exp.train_start} .. {exp.train_end}", train)
    filtered, examples = training_examples(train, cfg, funnel)
    step("filters and sampling")
    funnel.record(f"validation day {exp.val_date}", val)
    eval_rows = evaluation_set(val, filtered, funnel)
    step("evaluation set")
    # every training day and the validation day: the rows' days and the catalog's days
    val_day = day_number(exp.val_date)
    in_days = events.day_n.between(day_number(exp.train_start), day_number(exp.train_end)) | (events.day_n == val_day)
    days = events.filter(in_days).select("day_n").distinct().cache()
    present = sorted(d for d in days.day_n.to_pyarrow().to_pylist() if d != val_day)
    funnel.notes["training days with data"] = [str(day_date(d)) for d in present]
    base_tables = base_feature_tables(events, source.items, cfg, days)
    step("base features")
    outcome_columns = ("fraction_watch", "watch_ms", "like", "share", "follow", "comment")
    examples = add_base_features(examples.drop(*outcome_columns), base_tables)
    by_day = cfg.data.partition_by_day
    write_parquet(examples, out_dir / "train.parquet", ("day", "user_id", "ts_ms", "item_id"), by_day)
    eval_rows = add_base_features(eval_rows, base_tables)
    write_parquet(eval_rows, out_dir / "eval.parquet", ("user_id", "item_id"), by_day)
    step("write examples")
    retrieval_users = write_catalog_and_retrieval_sets(all_events, events, days, base_tables, val_day, cfg, out_dir, funnel)
    step("catalog and retrieval sets")
    needed = examples.select("user_id", "day_n").union(eval_rows.select("user_id", "day_n"))
    needed = needed.union(retrieval_users.select("user_id", "day_n")).distinct()
    item_watch = base_tables.by_key["item_id"].select("item_id", "day_n", "item_mean_watch_s")
    history = history_snapshots(events, needed, item_watch, cfg.history.lookback_days, cfg.history.max_items)
    write_parquet(history, out_dir / "history.parquet", ("day", "user_id"), by_day)
    step("history snapshots")
    write_parquet(item_table(events, source.items, filtered), out_dir / "items.parquet", ("item_id",))
    if source.users is not None:
        write_parquet(source.users, out_dir / "users.parquet", ("user_id",))
    # count(where=): BIGINT on every engine (DuckDB's SUM of integers is a HUGEINT, written as a double)
    popularity = train.group_by("item_id").aggregate(plays=train.count(), positives=train.count(where=train.label == 1))
    write_parquet(popularity, out_dir / "popularity.parquet", ("item_id",))
    step("items, users, popularity")
    funnel.notes["sources"] = list(source.files)
    funnel.notes["step_seconds"] = step.seconds
    funnel.write(out_dir / "funnel.json")
    step.close()
    return funnel
