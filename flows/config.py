"""The run config: every package's options composed, loaded from YAML with dotlist overrides.

Entry points (the CLI, Prefect flows) are the only readers of config files; everything below them
receives validated, frozen option objects. Errors name the field path (`model.vision.tile_size`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError, model_validator

from model.options import FrozenOptions, ModelOptions
from pipelines.download import DownloadOptions
from pipelines.evaluate.evaluate import EvalOptions
from pipelines.filter import FilterOptions
from pipelines.ray_runtime import RayOptions
from pipelines.sources import SourceOptions
from pipelines.stages.spec import StageShardOptions
from pipelines.synthetic.catalog import SyntheticWebOptions
from pipelines.train.schedule import TrainOptions
from recaption.options import CleaningOptions, RecaptionJobOptions, TeacherOptions


class SyntheticWebRun(SyntheticWebOptions):
    """The synthetic web a run serves itself (the demo): its size, port and source name."""

    port: int = 0
    """Port on 127.0.0.1; fix it so URLs stay valid when a crashed run is restarted."""
    source_name: str = "synthetic"
    """Name of the source the web's parquet files become (must be one of `sources`)."""


class RunConfig(FrozenOptions):
    """One EViP campaign: where it writes, and the options of every step."""

    run_root: str = "./runs/demo"
    """Root of everything the run writes: a local path or an fsspec URL (s3://bucket/run)."""
    ray: RayOptions = RayOptions()
    """Where the Ray jobs run: a local Ray, or a cluster address."""
    synthetic_web: SyntheticWebRun | None = None
    """A synthetic image web the run serves on 127.0.0.1 (demo, tests); None for real data."""
    sources: list[SourceOptions] = []
    """Image-text sources to ingest."""
    download: DownloadOptions = DownloadOptions()
    """img2dataset download on Ray."""
    filter: FilterOptions = FilterOptions()
    """Per-sample filters and deduplication."""
    teacher: TeacherOptions = TeacherOptions()
    """The recaptioning teacher (S1.2 data)."""
    cleaning: CleaningOptions = CleaningOptions()
    """What a teacher caption must look like to be kept."""
    recaption: RecaptionJobOptions = RecaptionJobOptions()
    """Layout of the recaption job on Ray Data."""
    stages: StageShardOptions = StageShardOptions()
    """The curriculum's data stages (S1.1 alt-text, S1.2 teacher captions, S1.3 tasks)."""
    train: TrainOptions = TrainOptions()
    """Training through the curriculum: per-stage schedule, workers, DeepSpeed."""
    evaluate: EvalOptions = EvalOptions()
    """Held-out evaluation after each stage and at its data milestones."""
    model: ModelOptions = ModelOptions()
    """The model: start LLM, visual experts, visual tokenizer."""

    @model_validator(mode="after")
    def _check_sources(self) -> RunConfig:
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError(f"source names must be unique, got {names}")
        unknown = sorted(set(self.recaption.sources) - set(names))
        if unknown:
            raise ValueError(f"recaption.sources {unknown} are not sources of this run")
        for stage in self.stages.stages:
            unknown = sorted({s.name for s in stage.sources} - set(names))
            if unknown:
                raise ValueError(f"stages {stage.name}: sources {unknown} are not sources")
        data_stages = [s.name for s in self.stages.stages]
        for index, stage in enumerate(self.train.stages):
            if stage.name not in data_stages:
                raise ValueError(f"train.stages[{index}]: {stage.name!r} is not a data stage "
                                 f"(stages.stages: {data_stages})")  # fmt: skip
        if self.synthetic_web is not None and self.synthetic_web.source_name not in names:
            raise ValueError(
                f"synthetic_web.source_name {self.synthetic_web.source_name!r} is not a source"
            )
        return self


class ConfigError(ValueError):
    """A config file or override that cannot be loaded; the message names every bad field."""


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {path}: {item['msg']}")
    return "invalid run config:\n" + "\n".join(lines)


def load_run_config(path: str | Path | RunConfig | None = None,
                    overrides: list[str] = ()) -> RunConfig:  # fmt: skip
    """Reads YAML (or the defaults when `path` is None, or a config given as such), applies
    `a.b.c=value` overrides, validates.

    Raises:
        ConfigError: unreadable file, malformed override, or a value that fails validation.
    """
    try:
        if isinstance(path, RunConfig):
            base, path = OmegaConf.create(path.model_dump(mode="json")), "(inline)"
        else:
            base = OmegaConf.load(path) if path is not None else OmegaConf.create({})
        for override in overrides:
            if "=" not in override:
                raise ConfigError(f"override {override!r} must look like key.path=value")
            key, value = override.split("=", 1)
            # update() walks list indices too (stages.stages.0.samples=1000)
            OmegaConf.update(base, key, yaml.safe_load(value) if value else None, merge=True)
        data = OmegaConf.to_container(base, resolve=True)
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except (OmegaConfBaseException, yaml.YAMLError, TypeError, IndexError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from error


def dump_run_config(config: RunConfig) -> str:
    """The config as YAML, every default filled in: what a run actually used."""
    return OmegaConf.to_yaml(OmegaConf.create(config.model_dump(mode="json")))


def describe_fields(model: type[FrozenOptions] = RunConfig, prefix: str = "") -> list[str]:
    """One line per setting, `path = default  # doc`: the field docstrings as help text."""
    lines = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        nested = next((a for a in getattr(annotation, "__args__", (annotation,))
                       if isinstance(a, type) and issubclass(a, FrozenOptions)), None)  # fmt: skip
        if nested is not None and not str(annotation).startswith("list"):
            lines.append(f"{path}:  # {field.description or ''}".rstrip())
            lines += describe_fields(nested, prefix=f"{path}.")
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"{path} = {default!r}  # {field.description or ''}".rstrip())
    return lines
