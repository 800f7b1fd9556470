"""Typed, strict experiment config loaded from TOML.

Every section (``twotower.config_sections``) is a pydantic model with ``extra="forbid"``: an unknown or
misspelt key is an error that names the key and the file, never a silent default. Relative paths in the file are resolved against the
directory of the config file, so ``twotower run configs/x.toml`` works from any working directory.
Reading files (``extends`` chains, merging, ``--set``) and writing TOML live in ``twotower.config_files``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from twotower.config_files import (
    ConfigError,
    ConfigSource,
    is_uri,
    merge_sources,
    read_chain,
    resolve_paths,
    set_source,
    toml_ready,
    write_toml,
)
from twotower.config_sections import (  # noqa: F401  (re-exported: one import path for callers)
    BlipConfig,
    ClientFilter,
    ContentConfig,
    DataConfig,
    DuckDBSettings,
    E5Config,
    ExperimentConfig,
    FeatureConfig,
    FilterConfig,
    HistoryConfig,
    ItemFilter,
    LabelConfig,
    MetadataEncoderConfig,
    ModelConfig,
    PrecomputedConfig,
    RetrievalConfig,
    SampleWeightConfig,
    SamplingConfig,
    SparkSettings,
    Strict,
    TrackingConfig,
    TrainConfig,
)


class Config(Strict):
    name: str = Field(description="The run's name: one path component (runs/<name>/<timestamp>/).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed (numpy accepts 0 .. 2**32 - 1).")
    data: DataConfig
    filters: FilterConfig = FilterConfig()
    label: LabelConfig = LabelConfig()
    sample_weight: SampleWeightConfig = SampleWeightConfig()
    sampling: SamplingConfig = SamplingConfig()
    history: HistoryConfig = HistoryConfig()
    features: FeatureConfig = FeatureConfig()
    content: ContentConfig = ContentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    experiments: Annotated[tuple[ExperimentConfig, ...], Field(min_length=1)]

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, value: str) -> str:
        # the name becomes a directory under --out: it must not reach outside it
        if not value or value in (".", "..") or any(c in value for c in "/\\\0") or Path(value).is_absolute():
            raise ValueError(f"name {value!r} must be a single directory name (no '/', '\\', '..' or empty)")
        return value

    @field_validator("experiments")
    @classmethod
    def _unique_ids(cls, value: tuple[ExperimentConfig, ...]) -> tuple[ExperimentConfig, ...]:
        ids = [e.id for e in value]
        if len(ids) != len(set(ids)):
            raise ValueError(f"experiment ids must be unique, got {ids}")
        return value

    @model_validator(mode="after")
    def _static_users_need_a_users_table(self) -> Config:
        """The sheet's user tower uses static user features (user_static), which need a users table: the
        generic adapter has one only with data.users_path. Left at its default, the feature list adapts
        (user_static is dropped); asked for explicitly, it is an error now rather than after prepare."""
        if "user_static" not in self.model.user_features or self.data.adapter != "generic" or self.data.users_path:
            return self
        if "user_features" in self.model.model_fields_set:
            raise ValueError(
                "model.user_features has 'user_static', which needs a users table: set data.users_path, "
                "or remove 'user_static'"
            )
        kept = tuple(f for f in self.model.user_features if f != "user_static")
        return self.model_copy(update={"model": self.model.model_copy(update={"user_features": kept})})

    def experiment(self, experiment_id: int) -> ExperimentConfig:
        for experiment in self.experiments:
            if experiment.id == experiment_id:
                return experiment
        raise ConfigError(f"config {self.name!r} has no experiment {experiment_id}; it has {[e.id for e in self.experiments]}")

    def selected(self, experiment_ids: Sequence[int] | None = None) -> list[ExperimentConfig]:
        """The experiments with these ids (each must exist), or every experiment when none are given."""
        return [self.experiment(i) for i in experiment_ids] if experiment_ids else list(self.experiments)


def _depth(raw: object, loc: tuple) -> int:
    """How many leading parts of ``loc`` (keys and list indices) exist in ``raw``."""
    depth = 0
    for part in loc:
        in_dict = isinstance(raw, dict) and part in raw
        in_list = isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_dict or in_list):
            break
        raw = raw[part]
        depth += 1
    return depth


def _written_in(loc: tuple, sources: Sequence[ConfigSource]) -> str:
    """``" in <source>"`` for the source of the value at ``loc`` (the last one holding most of it), else "".

    Merging keeps the value of the last source that writes a key, so that source is where to fix it.
    """
    best, best_depth = "", 0
    for source in sources:
        depth = _depth(source.raw, loc)
        if depth and depth >= best_depth:
            best, best_depth = f" in {source.name}", depth
    return best


def _describe(error: ValidationError, header: str, sources: Sequence[ConfigSource]) -> str:
    lines = [f"{header}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        where = _written_in(item["loc"], sources) if len(sources) > 1 else ""
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'{where} (check its spelling; see src/twotower/config.py)")
        elif item["type"] == "missing":
            lines.append(f"  missing key '{key}'")
        else:
            lines.append(f"  key '{key}'{where}: {item['msg']}")
    return "\n".join(lines)


def _validate(raw: dict, header: str, sources: Sequence[ConfigSource]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, header, sources)) from None


def parse_config(raw: dict, source: str = "<dict>", base: Path | None = None) -> Config:
    """Validate a config dict; ``base`` resolves relative paths. Errors name ``source`` and the key."""
    raw = copy.deepcopy(raw)
    if base is not None:
        resolve_paths(raw, base)
    return _validate(raw, f"invalid config {source}", [ConfigSource(source, raw)])


def load_config(path: str | Path, data_path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML config with the files it ``extends``, then ``overrides`` (``"section.key=value"``, the
    CLI's ``--set``, values parsed as TOML); ``data_path`` (``--data``) replaces ``data.path``.

    Errors name the file (or the ``--set``) where the bad key is written. Every path of the result is
    absolute: written ones against their file's directory, ``--set``/``--data`` ones and the default
    ``content.cache_dir`` against the working directory.
    """
    sources = read_chain(path)
    header = f"invalid config {path}"
    if len(sources) > 1:
        header += f" (extends {' -> '.join(s.name for s in reversed(sources[:-1]))})"
    if data_path is not None:
        location = str(data_path) if is_uri(str(data_path)) else str(Path(data_path).expanduser().resolve())
        sources.append(ConfigSource("--data", {"data": {"path": location}}))
    sources += [set_source(text) for text in overrides]
    config = _validate(merge_sources(sources), header, sources)
    if not config.content.cache_dir.is_absolute():  # the default, relative to the working directory
        content = config.content.model_copy(update={"cache_dir": config.content.cache_dir.resolve()})
        config = config.model_copy(update={"content": content})
    return config


def to_toml_dict(config: Config) -> dict:
    """The config as plain TOML values: dates as dates, paths as strings, tuples as lists, no ``None``."""
    return toml_ready(config.model_dump(mode="python"))


def _none_over_default(model: BaseModel, prefix: str = "") -> list[str]:
    """Keys whose value is None while their default is not: TOML has no null, so a file cannot say them."""
    found = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and field.get_default(call_default_factory=True) is not None:
            found.append(prefix + name)
        for index, child in enumerate(value if isinstance(value, tuple) else (value,)):
            if isinstance(child, BaseModel):
                at = f"{prefix}{name}.{index}." if isinstance(value, tuple) else f"{prefix}{name}."
                found += _none_over_default(child, at)
    return found


def write_resolved_config(config: Config, path: str | Path) -> Path:
    """Write every key of ``config`` as TOML, atomically: ``twotower run`` accepts the file as is and
    ``load_config`` reloads it to an equal ``Config``. Returns ``path``.

    Paths are written absolute (a relative one, e.g. the default cache of a config built in code, is
    relative to the working directory, as the run uses it). A key set to None where its default is not
    cannot be written in TOML and is a ``ConfigError``.
    """
    if unwritable := _none_over_default(config):
        raise ConfigError(f"config {config.name!r} cannot be written as TOML: {', '.join(unwritable)} is None")
    raw = to_toml_dict(config)
    resolve_paths(raw, Path.cwd())
    header = f"The fully resolved config {config.name!r}: every key, paths absolute.\nRerun it as is: twotower run <this file>"
    return write_toml(path, raw, header=header)
