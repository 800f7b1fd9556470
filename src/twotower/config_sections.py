"""The config's sections: one strict pydantic model per TOML table ([data], [filters], [label], ... [retrieval])
and the experiments' windows. ``twotower.config`` assembles them into ``Config`` and loads files.

Every model forbids unknown keys (``extra="forbid"``): a misspelt key is an error naming it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from twotower.config_files import is_uri


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# KuaiRand's days are Beijing calendar days; the generic layout's timestamps are documented as UTC.
DEFAULT_TIMEZONES = {"kuairand": "Asia/Shanghai", "generic": "UTC"}


def _location(value: object) -> object:
    """A URI (``s3a://...``, ``hdfs://...``, ``file:///...``) stays a string; anything else is a local path."""
    return value if isinstance(value, Path) or is_uri(value) or not isinstance(value, str) else Path(value)


# A local path (relative to the config file) or a URI that the data engine resolves.
Location = Annotated[Path | str, BeforeValidator(_location)]
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


class DuckDBSettings(Strict):
    """DuckDB settings (``[data.duckdb]``), used when ``data.engine = "duckdb"``."""

    memory_limit: str | None = Field(
        default=None,
        description="e.g. \"16GB\": beyond it DuckDB spills to temp_directory (default: DuckDB's, 80% of RAM).",
    )
    threads: int | None = Field(default=None, ge=1, description="Worker threads (default: every core).")
    temp_directory: Path | None = Field(
        default=None, description="Where DuckDB spills what does not fit in memory (default: DuckDB's, .tmp)."
    )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError(f"memory_limit {value!r} is not a size such as \"16GB\" or \"512MiB\"")
        return value


SparkValue = str | bool | int | float


class SparkSettings(Strict):
    """Spark settings (``[data.spark]``), used when ``data.engine = "spark"`` and no session is active yet
    (an active session, e.g. from spark-submit, is used as it is)."""

    master: str = Field("local[2]", min_length=1, description='local[N], "yarn", "spark://host:7077", "k8s://...".')
    conf: dict[str, SparkValue] = Field(
        default_factory=dict,
        description='Spark properties set when the session is created, e.g. "spark.driver.memory" = "4g".',
    )

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, value: dict[str, SparkValue]) -> dict[str, SparkValue]:
        wrong = [key for key in value if not key.startswith("spark.")]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: Spark properties start with 'spark.' (e.g. spark.driver.memory)")
        if "spark.master" in value:
            raise ValueError("set the master with data.spark.master, not conf.spark.master")
        return value


class DataConfig(Strict):
    adapter: Literal["kuairand", "generic"] = "kuairand"
    path: Location = Field(
        description="Directory (kuairand) or events file (generic): a path relative to the config file, or a URI "
        "the engine reads (file://, hdfs://, s3a://)."
    )
    items_path: Location | None = Field(default=None, description="generic only: optional items table.")
    users_path: Location | None = Field(default=None, description="generic only: optional users table.")
    user_categorical_columns: tuple[str, ...] = Field(
        default=(),
        description="generic only: columns of the users table that are codes, not quantities (a segment, a range "
        "bucket, a one-hot index, sentinel values such as -124): each gets a vocabulary and an embedding, "
        "unknown values a bucket of their own. Every other numeric column is standardised as a number.",
    )
    include_random_logs: bool = Field(default=False, description="kuairand: also read log_random_*.csv.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="generic only: canonical column name -> column name in your file."
    )
    timezone: str | None = Field(
        default=None,
        description="IANA time zone of local days and hours; default per adapter: kuairand Asia/Shanghai, generic UTC.",
    )
    timestamp_unit: Literal["s", "ms", "us", "ns"] = Field(
        default="ms",
        description="generic only: unit of an integer epoch `timestamp` column (checked against the values' "
        "magnitude; Parquet timestamps and ISO strings carry their own unit).",
    )
    kuairand_day: Literal["time_ms", "date_column"] = Field(
        default="time_ms",
        description="kuairand: the day from time_ms in `timezone` (exact), or from the log's own `date` column, "
        "which KuaiRand rounds to the nearest hour (plays after 23:30 fall on the next day).",
    )
    engine: Literal["duckdb", "spark"] = "duckdb"
    duckdb: DuckDBSettings = DuckDBSettings()
    spark: SparkSettings = SparkSettings()
    partition_by_day: bool = Field(
        default=False,
        description="Write the tables with a day column (train, eval, history, catalog, retrieval_users) as "
        "Hive folders <name>.parquet/day=YYYY-MM-DD/ instead of one file each (data.prepared.read_table reads both).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _adapter_keys(self) -> DataConfig:
        """A key of the other adapter set to anything but its default is an error, not silently ignored
        (a written default is harmless: a resolved config writes every key)."""
        generic_only = ("items_path", "users_path", "user_categorical_columns", "columns", "timestamp_unit")
        kuairand_only = ("include_random_logs", "kuairand_day")
        other = generic_only if self.adapter == "kuairand" else kuairand_only
        wrong = [key for key in other if getattr(self, key) != type(self).model_fields[key].get_default(call_default_factory=True)]
        if wrong:
            hint = " (kuairand reads video_features_basic_*.csv and user_features_*.csv from data.path)" if self.adapter == "kuairand" else ""
            keys = ", ".join(f"data.{key}" for key in wrong)
            raise ValueError(f"{keys}: not used by adapter {self.adapter!r}; remove {'them' if len(wrong) > 1 else 'it'}{hint}")
        return self

    @property
    def local_timezone(self) -> str:
        """The time zone of local days and hours: ``timezone``, or the adapter's default."""
        return self.timezone or DEFAULT_TIMEZONES[self.adapter]

    def timezone_note(self) -> str:
        """Which time zone is used and where it comes from (for the funnel and the console)."""
        if self.timezone:
            return f"{self.timezone} (data.timezone)"
        return f"{self.local_timezone} (the {self.adapter} adapter's default; set data.timezone to change it)"


class ClientFilter(Strict):
    min_interactions: int = Field(4, ge=0)
    max_interactions: int = Field(2000, ge=1)
    min_positives: int = Field(1, ge=0)
    min_negatives: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ClientFilter:
        if self.min_interactions > self.max_interactions:
            raise ValueError("min_interactions must not exceed max_interactions")
        return self


class ItemFilter(Strict):
    min_interactions: int = Field(3, ge=0)


class FilterConfig(Strict):
    client: ClientFilter = ClientFilter()
    item: ItemFilter = ItemFilter()


Event = Literal["like", "share", "follow", "comment"]


class LabelConfig(Strict):
    """Positive label: ``fraction_watch > fraction_watch_above`` OR any of ``or_events``.

    The sheet: ``fraction_watch_above = 0.9``. The series' other criterion "like or share or
    fraction_watch > 0.8": ``fraction_watch_above = 0.8, or_events = ["like", "share"]``.
    """

    fraction_watch_above: float | None = Field(0.9, ge=0.0)
    or_events: tuple[Event, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> LabelConfig:
        if self.fraction_watch_above is None and not self.or_events:
            raise ValueError("a label needs fraction_watch_above or at least one of or_events")
        return self


class SampleWeightConfig(Strict):
    """``none``; ``sqrt_watch_seconds`` (positives weighted sqrt(seconds watched), capped); ``events``
    (positives: watched 1.2, liked 1.5, shared 2.0, any two 2.5, all three 3.0; negatives 1.0)."""

    mode: Literal["none", "sqrt_watch_seconds", "events"] = "none"
    cap: float = Field(8.0, gt=0)


class SamplingConfig(Strict):
    """Positive:negative ratio of the training examples (about; each row is kept by its own hash).

    ``global``: one keep rate per label for all rows (the sheet: about 5:5 overall); ``per_user``: per user,
    so that each user's rows are about positive:negative (users with one label keep every row)."""

    positive: int = Field(5, ge=1)
    negative: int = Field(5, ge=1)
    mode: Literal["global", "per_user"] = "global"


class HistoryConfig(Strict):
    max_items: int = Field(100, ge=1)
    lookback_days: int = Field(14, ge=1, description="Past days that feed history and base features.")


class FeatureConfig(Strict):
    """Base-feature settings (point-in-time, days before the row's day within the lookback)."""

    smoothing: float = Field(20.0, ge=0, description="Pseudo-plays pulling positive rates to the global rate.")


class BlipConfig(Strict):
    checkpoint: Path = Field(description="Local directory with a BlipForImageTextRetrieval checkpoint.")
    media_dir: Path | None = Field(default=None, description="Directory with <item_id>.mp4 / .jpg / .png.")
    frames: int = Field(5, ge=1)
    image_size: int = Field(224, ge=16)
    combine: Literal["image", "text", "concat", "sum"] = "concat"
    batch_size: int = Field(32, ge=1)
    device: str = "auto"


class E5Config(Strict):
    fields: tuple[str, ...] = ("caption", "cover_text")
    batch_size: int = Field(64, ge=1)


class MetadataEncoderConfig(Strict):
    min_count: int = Field(5, ge=1, description="Author and music ids seen fewer times share one bucket.")
    rare_buckets: int = Field(32, ge=1, description="Hash buckets shared by rare author and music ids.")
    duration_bins: int = Field(16, ge=1, description="Log-spaced duration bins (1 s .. 20 min), one-hot.")


class PrecomputedConfig(Strict):
    path: Path
    dim: int | None = Field(default=None, ge=1, description="Expected vector length; checked when given.")


class ContentConfig(Strict):
    encoder: Literal["blip", "e5", "metadata", "precomputed"] = "metadata"
    pca_components: int = Field(128, ge=1)
    cache_dir: Path = Field(
        default=Path("cache/content"),
        description="Encoded-vector cache; the default is relative to the working directory (like runs/).",
    )
    blip: BlipConfig | None = None
    e5: E5Config = E5Config()
    metadata: MetadataEncoderConfig = MetadataEncoderConfig()
    precomputed: PrecomputedConfig | None = None

    @model_validator(mode="after")
    def _encoder_section(self) -> ContentConfig:
        if self.encoder == "blip" and self.blip is None:
            raise ValueError("encoder 'blip' needs a [content.blip] section with its checkpoint")
        if self.encoder == "precomputed" and self.precomputed is None:
            raise ValueError("encoder 'precomputed' needs a [content.precomputed] section with its path")
        dim = self.precomputed.dim if self.encoder == "precomputed" and self.precomputed else None
        if dim is not None and self.pca_components > dim:
            raise ValueError(
                f"pca_components = {self.pca_components} is larger than precomputed.dim = {dim}: PCA cannot give "
                f"more components than the vectors have; set content.pca_components to at most {dim}"
            )
        return self


UserFeature = Literal["pos_mean_hist_emb", "neg_mean_hist_emb", "context", "user_base", "user_static", "user_id"]
ItemFeature = Literal["content", "item_base", "creator", "item_id"]


class ModelConfig(Strict):
    user_features: tuple[UserFeature, ...] = (
        "pos_mean_hist_emb",
        "neg_mean_hist_emb",
        "context",
        "user_base",
        "user_static",
    )
    item_features: tuple[ItemFeature, ...] = ("content", "item_base", "creator")
    item_bias: bool = True
    hidden: tuple[int, ...] = (256, 128)
    output_dim: int = Field(64, ge=1)
    id_dim: int = Field(32, ge=1)
    normalize: bool = False
    temperature: float = Field(0.1, gt=0, description="With normalize: logit = cosine / temperature + bias.")
    dropout: float = Field(0.1, ge=0, lt=1)
    context_dim: int = Field(8, ge=1, description="Embedding size of day of week and of hour of day.")
    creator_id_embedding: bool = Field(True, description="'creator' group: also a creator id embedding.")
    creator_min_count: int = Field(5, ge=1, description="Creators with fewer training rows share the rare bucket.")
    max_history: int = Field(
        100,
        ge=1,
        description="History ids the model uses per list (the most recent ones); history.max_items bounds "
        "what the data step keeps, so a larger value here has no effect.",
    )


class TrainConfig(Strict):
    """Training: the objective, early stopping on the last training day, then (``refit``) all days.

    ``objective = "bce"`` (the sheet): weighted binary cross-entropy on the played rows of train.parquet.
    ``"softmax"`` (retrieval): each positive row against the batch's other positives and ``negatives``
    items drawn uniformly from that day's catalog (catalog.parquet), batches drawn within one day, with the
    log-frequency correction of each candidate's sampling probability (``logq_correction``) and the
    model's ``normalize`` / ``temperature`` (cosine / temperature). See ``twotower.model.objectives``.
    """

    objective: Literal["bce", "softmax"] = Field(
        "bce",
        description="'bce': weighted BCE on played rows (the sheet); 'softmax': positives against in-batch and "
        "catalog-sampled negatives (sampling-bias-corrected softmax, for catalog retrieval).",
    )
    negatives: int = Field(
        256,
        ge=0,
        description="softmax: items drawn uniformly (with replacement) from the batch day's catalog per batch, "
        "shared by every row of the batch; 0 = in-batch negatives only.",
    )
    logq_correction: bool = Field(
        True,
        description="softmax: subtract log(B * p_day(i) + negatives / |catalog_day|) from each candidate's logit "
        "(p_day(i): item i's share of that day's positives; B: the batch's rows), so that popular items are not "
        "pushed down just for being sampled more often as in-batch negatives.",
    )
    refit: bool = Field(
        True,
        description="After early stopping on the last training day chose the epoch count, fit the features and "
        "train a fresh model (same seed) on every training day for that many epochs; false keeps the model "
        "trained without the last day.",
    )
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(10, ge=1, description="The most epochs early stopping may train.")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(
        2, ge=0, description="Stop after more than this many epochs without a better held-out metric."
    )
    device: str = "auto"
    eval_batch_size: int = Field(8192, ge=1, description="Batch size for scoring the held-out day.")
    shuffle_buffer: int = Field(
        0,
        ge=0,
        description="0: the training rows are read into memory and shuffled whole. N > 0: they are streamed from "
        "the prepared Parquet a row group at a time through a shuffle buffer of N rows (memory independent of the "
        "number of rows; a buffer holding every row gives the in-memory results). See docs/scaling.md.",
    )


class TrackingConfig(Strict):
    """Experiment tracking: with ``mlflow_uri`` each run is logged to MLflow when it ends
    (``twotower.tracking``). A relative ``file:`` URI or plain path is relative to the working directory."""

    mlflow_uri: str | None = Field(default=None, description="e.g. file:./mlruns or http://host:5000; none: off.")
    experiment: str = Field("twotower", min_length=1, description="The MLflow experiment the runs go to.")


class RetrievalConfig(Strict):
    """Catalog retrieval in every run (docs/retrieval.md): the top 500 of the whole catalog per user."""

    tail_plays: tuple[int, ...] = Field(
        (3, 1),
        description="Tail items: fewer training-window plays than each threshold (tail_recall@K[plays<t]).",
    )
    index: Literal["exact", "hnsw"] = Field("exact", description="FAISS index: exact inner product, or HNSW.")
    inspect_users: int = Field(1000, ge=0, description="Users (drawn with the seed) whose top 100 go to inspect.parquet.")


class ExperimentConfig(Strict):
    id: int
    event_type: str = "played (p90)"
    train_start: dt.date
    train_end: dt.date
    val_date: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> ExperimentConfig:
        if self.train_start > self.train_end:
            raise ValueError(f"experiment {self.id}: train_start is after train_end")
        if self.val_date <= self.train_end:
            raise ValueError(f"experiment {self.id}: val_date must come after train_end")
        return self

    @property
    def train_days(self) -> int:
        return (self.train_end - self.train_start).days + 1
