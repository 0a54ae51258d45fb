"""ingest: raw web WARCs, Gutenberg books and code trees → datatrove JSONL documents, per source.

`run_ingest(cfg.ingest.<source>, {"raw": Path}, output)` builds that source's datatrove pipeline
(tasks/ingest/web.py, books.py, code.py), runs it with the configured executor inside a staging
folder (completion markers and logs in `<staging>/logs`, so a rerun after a crash skips finished
tasks), moves the logs to `.<output>.logs`, renames the staging folder into place and returns stats
counted from the written files.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
from tasks.executor import run_executor
from tasks.resume import datatrove_params, resumable_dir, stage_key

from .common import count_outputs, log

SOURCES = {WebIngestConfig: "web", BooksIngestConfig: "books", CodeIngestConfig: "code"}


def logs_path(output: Path) -> Path:
    """Where a finished run's datatrove logs and per-step stats end up: `.<name>.logs` beside the output."""
    return output.parent / f".{output.name}.logs"


def _build(source: str, cfg, raw: Path, output: Path) -> list:
    if source == "web":
        from . import web

        return web.build_pipeline(cfg, raw, output)
    if source == "books":
        from . import books

        return books.build_pipeline(cfg, raw, output)
    from . import code

    return code.build_pipeline(cfg, raw, output)


def run_ingest(cfg, inputs: dict[str, Path], output: Path) -> dict:
    if "raw" not in inputs:
        raise ValueError(f"ingest needs --in raw=PATH (a folder, file or glob); got inputs {sorted(inputs)}")
    if type(cfg) not in SOURCES:
        raise TypeError(f"run_ingest needs a Web/Books/CodeIngestConfig section, got {type(cfg).__name__}")
    source, raw, output = SOURCES[type(cfg)], Path(inputs["raw"]).absolute(), Path(output).absolute()
    with resumable_dir(output, stage_key(f"ingest@{source}", datatrove_params(cfg), {"raw": raw})) as staging:
        pipeline = _build(source, cfg, raw, staging)
        log.info("ingest %s: reading %s with %s executor, %d tasks", source, raw, cfg.executor.kind, cfg.executor.tasks)
        run_executor(cfg.executor, pipeline, staging / "logs", f"ingest-{source}")
        stats = count_outputs(staging)
        # datatrove's logs/stats carry timestamps: keep them out of the DVC-tracked output so that it is byte-identical
        logs = logs_path(output)
        shutil.rmtree(logs, ignore_errors=True)
        shutil.move(staging / "logs", logs)
    log.info("ingest %s: %d records in, %d documents out (%.1f MB), dropped %s", source, stats["docs_in"],
             stats["docs_out"], stats["bytes_out"] / 1e6, stats["dropped"] or "nothing")
    return stats


__all__ = ["logs_path", "run_ingest"]
