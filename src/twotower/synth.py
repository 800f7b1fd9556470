"""A planted-signal log: a seeded synthetic log in the generic adapter's layout with KNOWN structure.

The generating model (every number is a :class:`SynthSpec` field):

- ``topics`` topic centres ``c_t``: standard normal in ``dim`` dimensions, scaled to unit length.
- Items: a creator (uniform over ``creators``), a topic (the creator's own topic with probability
  ``creator_topic_share``, otherwise uniform: by default creators make items of mixed topics, so a creator id
  is only a weak proxy for an item's identity), a content vector ``v_i = c_topic + item_noise * z / sqrt(dim)``
  (written as precomputed embeddings), a duration (log-normal around ``median_duration_s``) and a quality
  ``q_i ~ N(0, quality_sd)``.
- Users: a preferred topic (uniform) and a preference vector ``p_u = unit(c_topic + user_noise * z / sqrt(dim))``;
  an activity level (gamma, mean 1) scales their plays per day.
- Plays: Poisson(``plays_per_user_day`` * activity) per user and day. The item is drawn from the user's
  preferred topic with probability ``exposure_bias`` (the recommender that produced the log already knew
  something), otherwise from the whole catalogue; within either, item popularity follows a Zipf law with
  exponent ``popularity_skew`` (0 = uniform).
- Completion: ``P(watch fraction > 0.9) = sigmoid(base_logit + preference_effect * cos(p_u, v_i)
  - duration_effect * z_dur_i + q_i)``, ``z_dur_i = (log duration - log median) / duration_sigma`` (short videos
  are completed more often). A completed play watches U(0.92, 1.0) of the video, another one 0.88 * Beta(1.2, 2.5),
  so the label ``fraction_watch > 0.9`` is exactly the completion draw. Likes and shares are rarer and more
  likely on completed plays.

Files written by :func:`write_planted`: ``events.parquet``, ``items.parquet``, ``users.parquet`` (one static
column unrelated to the preference), ``embeddings.parquet`` (item_id, vector: the ``precomputed`` encoder's
input), ``truth_users.parquet`` (user_id, topic), ``truth_items.parquet`` (item_id, topic, creator_id, quality)
and ``truth.json`` (the spec, the topic centres, counts). Days are UTC calendar days from ``start_date``.
:func:`config_dict` is a ready config for such a log (tests and ``benchmarks/planted.py`` share it);
``twotower synth`` (:func:`write_synth_command`) writes the files and that config as ``planted.toml``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twotower.io import write_atomic, write_json

DAY_MS = 86_400_000
EVENT_FILES = ("events.parquet", "items.parquet", "users.parquet", "embeddings.parquet")


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a planted-signal log (see the module docstring for the model they drive)."""

    users: int = 3000
    items: int = 2000
    topics: int = 20
    days: int = 14
    plays_per_user_day: float = 8.0
    dim: int = 32
    creators: int | None = None  # default: items // 10 (at least 1)
    creator_topic_share: float = 0.0  # 0: creators make mixed topics; 1: each creator one topic
    item_noise: float = 0.5
    user_noise: float = 0.3
    exposure_bias: float = 0.3
    popularity_skew: float = 0.5
    preference_effect: float = 3.0
    duration_effect: float = 0.6
    median_duration_s: float = 20.0
    duration_sigma: float = 0.9
    quality_sd: float = 0.3
    base_logit: float = -1.5
    seed: int = 0
    start_date: dt.date = dt.date(2024, 3, 1)

    def __post_init__(self) -> None:
        positive = (
            "users",
            "items",
            "topics",
            "dim",
            "plays_per_user_day",
            "median_duration_s",
            "duration_sigma",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"SynthSpec.{name} must be > 0, got {getattr(self, name)}")
        if self.days < 3:
            raise ValueError(
                f"SynthSpec.days must be >= 3 (history, training and a validation day), got {self.days}"
            )
        if self.creators is not None and self.creators < 1:
            raise ValueError(f"SynthSpec.creators must be >= 1, got {self.creators}")
        for name in ("creator_topic_share", "exposure_bias"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthSpec.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("item_noise", "user_noise", "popularity_skew", "quality_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"SynthSpec.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def n_creators(self) -> int:
        return self.creators if self.creators is not None else max(self.items // 10, 1)

    def as_json(self) -> dict:
        return {k: (str(v) if isinstance(v, dt.date) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PlantedLog:
    """A generated log in memory. Arrays: centres (topics, dim); item_* (items,); item_vectors (items, dim);
    user_* (users,); events: one row per play, sorted by timestamp."""

    spec: SynthSpec
    centres: np.ndarray
    item_topic: np.ndarray
    item_creator: np.ndarray
    item_vectors: np.ndarray
    item_duration_s: np.ndarray
    item_quality: np.ndarray
    user_topic: np.ndarray
    user_preference: np.ndarray
    events: pd.DataFrame


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _draw_items(
    rng: np.random.Generator, spec: SynthSpec, item_topic: np.ndarray, row_topic: np.ndarray
) -> np.ndarray:
    """Item of each play (rows,): from the user's preferred topic with probability ``exposure_bias``,
    otherwise from the catalogue; Zipf popularity within either. Inverse-CDF sampling on one cumulative
    weight array with items grouped by topic, so a topic is a contiguous range of it."""
    weights = 1.0 / np.arange(1, spec.items + 1) ** spec.popularity_skew
    weights = rng.permutation(weights)  # popularity independent of item id and topic
    order = np.argsort(item_topic, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(weights[order])])
    # the items of topic t are order[bounds[t]:bounds[t + 1]]
    bounds = np.searchsorted(item_topic[order], np.arange(spec.topics + 1))
    lo, hi = np.zeros(len(row_topic)), np.full(len(row_topic), cum[-1])
    biased = (rng.random(len(row_topic)) < spec.exposure_bias) & (bounds[row_topic + 1] > bounds[row_topic])
    lo[biased], hi[biased] = cum[bounds[row_topic[biased]]], cum[bounds[row_topic[biased] + 1]]
    u = lo + rng.random(len(row_topic)) * (hi - lo)
    position = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, spec.items - 1)
    return order[position]


def _affinity(
    user_pref: np.ndarray, item_unit: np.ndarray, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """cos(p_u, v_i) per play (rows,), in chunks so memory stays bounded at any size."""
    out = np.empty(len(users), dtype=np.float32)
    chunk = 1_000_000
    for start in range(0, len(users), chunk):
        sl = slice(start, start + chunk)
        out[sl] = np.einsum("rd,rd->r", user_pref[users[sl]], item_unit[items[sl]])
    return out


def generate(spec: SynthSpec) -> PlantedLog:
    """Generate the log for ``spec`` (vectorised; deterministic for a given spec)."""
    rng = np.random.default_rng(spec.seed)
    centres = _unit(rng.standard_normal((spec.topics, spec.dim)))

    creator_topic = rng.integers(0, spec.topics, spec.n_creators)
    item_creator = rng.integers(0, spec.n_creators, spec.items)
    own = rng.random(spec.items) < spec.creator_topic_share
    item_topic = np.where(own, creator_topic[item_creator], rng.integers(0, spec.topics, spec.items))
    scale = 1.0 / np.sqrt(spec.dim)  # noise of norm ~1 before the noise parameter
    item_vectors = centres[item_topic] + spec.item_noise * scale * rng.standard_normal((spec.items, spec.dim))
    log_duration = np.log(spec.median_duration_s) + spec.duration_sigma * rng.standard_normal(spec.items)
    item_duration = np.round(np.exp(log_duration).clip(3.0, 600.0), 1)
    duration_z = (np.log(item_duration) - np.log(spec.median_duration_s)) / spec.duration_sigma
    item_quality = spec.quality_sd * rng.standard_normal(spec.items)

    user_topic = rng.integers(0, spec.topics, spec.users)
    user_pref = _unit(
        centres[user_topic] + spec.user_noise * scale * rng.standard_normal((spec.users, spec.dim))
    )
    activity = rng.gamma(4.0, 0.25, spec.users)

    counts = rng.poisson(spec.plays_per_user_day * np.repeat(activity, spec.days))  # (users * days,)
    user = np.repeat(np.repeat(np.arange(spec.users), spec.days), counts)
    day = np.repeat(np.tile(np.arange(spec.days), spec.users), counts)
    item = _draw_items(rng, spec, item_topic, user_topic[user])

    cosine = _affinity(user_pref.astype(np.float32), _unit(item_vectors).astype(np.float32), user, item)
    logit = spec.base_logit + spec.preference_effect * cosine - spec.duration_effect * duration_z[item]
    logit += item_quality[item]
    completed = rng.random(len(user)) < 1.0 / (1.0 + np.exp(-logit))
    # Completed plays watch > 0.92 of the video, others < 0.88: after rounding to 0.01 s the label
    # fraction_watch > 0.9 is exactly `completed` (durations are >= 3 s).
    fraction = np.where(completed, rng.uniform(0.92, 1.0, len(user)), 0.88 * rng.beta(1.2, 2.5, len(user)))
    duration = item_duration[item]
    start_ms = int(pd.Timestamp(spec.start_date, tz="UTC").value // 1_000_000)
    ts = start_ms + day * DAY_MS + rng.integers(0, DAY_MS, len(user))
    like = rng.random(len(user)) < 0.01 + 0.06 * completed
    share = rng.random(len(user)) < 0.002 + 0.01 * completed
    order = np.argsort(ts, kind="stable")  # time order; equal times keep the (user, day) generation order
    events = pd.DataFrame(
        {
            "user_id": user[order].astype(np.int64),
            "item_id": item[order].astype(np.int64),
            "timestamp": pd.to_datetime(ts[order], unit="ms", utc=True),
            "watch_seconds": np.round(fraction * duration, 2)[order],
            "duration_seconds": duration[order],
            "like": like[order].astype(np.int8),
            "share": share[order].astype(np.int8),
        }
    )
    return PlantedLog(
        spec,
        centres,
        item_topic,
        item_creator,
        item_vectors.astype(np.float32),
        item_duration,
        item_quality,
        user_topic,
        user_pref.astype(np.float32),
        events,
    )


def _write_parquet(table: pa.Table | pd.DataFrame, path: Path) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_planted(log: PlantedLog, out_dir: Path) -> dict[str, Path]:
    """Write the log's files (module docstring) into ``out_dir``; returns {name: path}."""
    out_dir = Path(out_dir)
    spec, n_items = log.spec, len(log.item_topic)
    item_ids = np.arange(n_items, dtype=np.int64)
    rng = np.random.default_rng([spec.seed, 1])  # side columns that carry no signal
    paths = {name.removesuffix(".parquet"): out_dir / name for name in EVENT_FILES}
    _write_parquet(log.events, paths["events"])
    upload = pd.Timestamp(spec.start_date) - pd.to_timedelta(rng.integers(1, 365, n_items), unit="D")
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "creator_id": log.item_creator.astype(np.int64),
            "duration_seconds": log.item_duration_s,
            "upload_date": upload.date,
        }
    )
    _write_parquet(items, paths["items"])
    users = pd.DataFrame(
        {
            "user_id": np.arange(len(log.user_topic), dtype=np.int64),
            "register_days": rng.integers(1, 1000, len(log.user_topic)).astype(np.int64),
        }
    )
    _write_parquet(users, paths["users"])
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(log.item_vectors.reshape(-1), type=pa.float32()), spec.dim
    )
    _write_parquet(pa.table({"item_id": item_ids, "vector": vectors}), paths["embeddings"])
    paths["truth_users"], paths["truth_items"] = (
        out_dir / "truth_users.parquet",
        out_dir / "truth_items.parquet",
    )
    _write_parquet(
        pd.DataFrame({"user_id": np.arange(len(log.user_topic), dtype=np.int64), "topic": log.user_topic}),
        paths["truth_users"],
    )
    _write_parquet(
        pd.DataFrame(
            {
                "item_id": item_ids,
                "topic": log.item_topic,
                "creator_id": log.item_creator,
                "quality": log.item_quality,
            }
        ),
        paths["truth_items"],
    )
    paths["truth"] = out_dir / "truth.json"
    label = log.events["watch_seconds"] > 0.9 * log.events["duration_seconds"]
    write_json(
        paths["truth"],
        {
            "spec": spec.as_json(),
            "creators": spec.n_creators,
            "centres": np.round(log.centres, 7).tolist(),
            "plays": len(log.events),
            "positive_share": float(label.mean()) if len(label) else None,
            "days": [str(spec.start_date + dt.timedelta(days=d)) for d in range(spec.days)],
        },
    )
    return paths


def read_vectors(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """``embeddings.parquet`` of a planted log: (item_id (n,) int64, vectors (n, dim) float32)."""
    table = pq.read_table(Path(directory) / "embeddings.parquet")
    ids = table.column("item_id").to_numpy().astype(np.int64)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.astype(np.float32).reshape(len(ids), -1)


@dataclass(frozen=True)
class Truth:
    """The planted parameters read back: centres (topics, dim); user_topic / item_topic: id-indexed Series."""

    centres: np.ndarray
    user_topic: pd.Series
    item_topic: pd.Series
    spec: dict


def read_truth(directory: Path) -> Truth:
    """Read what :func:`write_planted` wrote about the planted structure in ``directory``."""
    directory = Path(directory)
    path = directory / "truth.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: it is written by `twotower synth` next to the planted log")
    meta = json.loads(path.read_text())
    users = pd.read_parquet(directory / "truth_users.parquet")
    items = pd.read_parquet(directory / "truth_items.parquet")
    return Truth(
        np.asarray(meta["centres"], dtype=np.float64),
        users.set_index("user_id")["topic"],
        items.set_index("item_id")["topic"],
        meta["spec"],
    )


def config_dict(
    spec: SynthSpec,
    data_dir: Path | str,
    *,
    name: str = "planted",
    train_days: int | None = None,
    pca_components: int | None = None,
    epochs: int = 10,
    model: dict | None = None,
    train: dict | None = None,
) -> dict:
    """A ready config (the seed's settings) for the planted log in ``data_dir`` (a relative ``data_dir``
    stays relative, which is what a TOML beside the files needs).

    Days: the last generated day is the validation day, the ``train_days`` before it (default
    ``min(7, days - 2)``) the training window, the earlier ones history only; the lookback covers every day.
    Content: the ``precomputed`` encoder on ``embeddings.parquet``, PCA to ``pca_components`` (default
    ``min(dim, 16)``). ``model`` / ``train`` entries override the defaults.
    """
    data_dir = Path(data_dir)
    train_days = min(7, spec.days - 2) if train_days is None else train_days
    if not 1 <= train_days <= spec.days - 1:
        raise ValueError(
            f"train_days must be in 1..{spec.days - 1} for a log of {spec.days} days, got {train_days}"
        )
    val = spec.start_date + dt.timedelta(days=spec.days - 1)
    first = val - dt.timedelta(days=train_days)
    return {
        "name": name,
        "seed": spec.seed,
        "data": {
            "adapter": "generic",
            "path": str(data_dir / "events.parquet"),
            "items_path": str(data_dir / "items.parquet"),
            "users_path": str(data_dir / "users.parquet"),
            "timezone": "UTC",
        },
        "history": {"max_items": 100, "lookback_days": spec.days},
        "content": {
            "encoder": "precomputed",
            "pca_components": pca_components or min(spec.dim, 16),
            "cache_dir": str(data_dir / "cache"),
            "precomputed": {"path": str(data_dir / "embeddings.parquet"), "dim": spec.dim},
        },
        "model": dict(model or {}),
        "train": {"epochs": epochs, **(train or {})},
        "experiments": [
            {"id": 1, "train_start": first, "train_end": val - dt.timedelta(days=1), "val_date": val}
        ],
    }


def write_synth_command(spec: SynthSpec, out_dir: Path) -> dict[str, Path]:
    """``twotower synth``: generate the log into ``out_dir`` (new or empty) and write ``planted.toml`` beside
    it, with paths relative to it; returns {name: path} including ``config``."""
    import tomli_w

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty directory; choose a new output directory")
    paths = write_planted(generate(spec), out_dir)
    raw = {key: value for key, value in config_dict(spec, Path(".")).items() if value != {}}
    paths["config"] = out_dir / "planted.toml"
    header = (
        f"# A planted-signal log written by `twotower synth` (seed {spec.seed}); truth.json holds the spec.\n"
    )
    write_atomic(paths["config"], lambda tmp: tmp.write_text(header + tomli_w.dumps(raw)))
    return paths
