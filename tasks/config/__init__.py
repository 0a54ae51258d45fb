"""params.yaml → one typed, validated `PipelineConfig`; each stage receives only its own section.

Validation happens on load, before any work: unknown keys and bad values raise `ConfigError`
with the dotted key, e.g. `mix.code_fraction must be less than 1, got 1.5`. Values that must agree
across sections are checked on load too (checks.py); values checked against the code that consumes
them (filter signatures, model presets, lm-eval tasks) by `ensure_library_checks`, which
`python -m tasks validate`, every stage command and `flows run` call before any work.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pydantic import ValidationError

from .base import ConfigError, Section, format_validation_error
from .checks import cross_section_errors, ensure_library_checks
from .dedup import DedupConfig
from .evaluate import EvaluateConfig
from .fetch import FetchConfig
from .filter import FilterConfig
from .ingest import IngestConfig
from .mix import MixConfig
from .pipeline import FlowConfig, TrackingConfig
from .shard import ShardConfig
from .tokenizer import TokenizerConfig
from .train import TrainConfig

DEFAULT_PARAMS = "params.yaml"


class PipelineConfig(Section):
    tracking: TrackingConfig = TrackingConfig()
    flow: FlowConfig = FlowConfig()
    fetch: FetchConfig
    ingest: IngestConfig = IngestConfig()
    dedup: DedupConfig = DedupConfig()
    filter: FilterConfig = FilterConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    mix: MixConfig = MixConfig()
    shard: ShardConfig = ShardConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    def section(self, dotted: str) -> Section:
        """`section("ingest.web")` → the WebIngestConfig object."""
        node = self
        for part in dotted.split("."):
            if not hasattr(node, part):
                raise ConfigError(f"no config section named {dotted!r}")
            node = getattr(node, part)
        return node


def deep_merge(base: dict, override: dict) -> dict:
    """Profile values replace the base's; nested mappings merge key by key, lists are replaced whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_config(data: dict) -> PipelineConfig:
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    if errors := cross_section_errors(cfg):
        raise ConfigError("; ".join(errors))
    return cfg


def load_config(path: str | Path = DEFAULT_PARAMS, profile: str | Path | None = None) -> PipelineConfig:
    data = read_yaml(path)
    if profile is not None:
        data = deep_merge(data, read_yaml(profile))
    return parse_config(data)


__all__ = ["ConfigError", "PipelineConfig", "Section", "deep_merge", "ensure_library_checks", "load_config",
           "parse_config", "read_yaml"]
