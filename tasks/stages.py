"""The stage table: which function implements each `python -m tasks <stage>` and which config section it gets."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    target: str
    """`module:function` implementing `run_<stage>(cfg_section, inputs, output) -> stats`."""
    section: str
    """Dotted config section the function receives; `{source}` is filled from the command line."""
    sources: tuple[str, ...] = ()
    live_tracking: bool = False
    """Logs to MLflow while it runs (per-step metrics, registry); other stages are logged after they finish."""
    before: str | None = None
    """Optional `module:function(tracking_cfg, cfg_section, inputs, workdir) -> inputs`, run with the stage's MLflow
    run active before the stage function: registry inputs (the evaluate stage's candidate versions) land in the
    temporary `workdir` and reach the function as ordinary `--in` folders."""
    after: str | None = None
    """Optional `module:function(tracking_cfg, output, stats) -> extra stats`, run with the stage's MLflow run
    active (model registration, champion alias): tracking belongs to the CLI, not to the stage function."""
    reads: tuple[str, ...] = ()
    """Other params keys the section is filled from when params.yaml is loaded (dvc.yaml tracks them too)."""
    io_bound: bool = False
    """Copies or downloads: under the flow it runs without taking one of `flow.max_parallel_stages`' slots,
    so waiting on disks and networks never holds back the CPU-bound stages on the critical path."""


STAGES: dict[str, Stage] = {
    "fetch": Stage("tasks.fetch:run_fetch", "fetch.{source}", ("web", "books", "code", "eval", "reference"),
                   io_bound=True),
    "ingest": Stage("tasks.ingest:run_ingest", "ingest.{source}", ("web", "books", "code")),
    "dedup": Stage("tasks.dedup:run_dedup", "dedup"),
    "filter": Stage("tasks.filter:run_filter", "filter"),
    "decontaminate": Stage("tasks.decontaminate:run_decontaminate", "decontaminate", reads=("evaluate.tasks",)),
    "tokenizer": Stage("tasks.tokenizer:run_tokenizer", "tokenizer"),
    "mix": Stage("tasks.mix:run_mix", "mix"),
    "shard": Stage("tasks.shard:run_shard", "shard"),
    "train": Stage("tasks.train:run_train", "train", live_tracking=True, after="tasks.train.registry:register_checkpoints"),
    "evaluate": Stage("tasks.evaluate:run_evaluate", "evaluate", live_tracking=True,
                      before="tasks.evaluate.registry:fetch_candidates", after="tasks.evaluate.registry:update_champion"),
}

COMMANDS = {"generate": "tasks.evaluate.cli:generate_main", "lineage": "tasks.lineage:main"}


def load_target(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def section_name(stage: str) -> str:
    """Config section of a DVC stage address such as `ingest@web` → `ingest.web`."""
    family, _, source = stage.partition("@")
    return STAGES[family].section.format(source=source)


def metrics_path(stage: str, source: str | None) -> Path:
    return Path("metrics") / (f"{stage}_{source}.json" if source else f"{stage}.json")
