"""ingest: raw web WARCs, Gutenberg books and code trees → datatrove JSONL documents, per source.

`run_ingest(cfg.ingest.<source>, {"raw": Path}, output)` builds that source's datatrove pipeline
(tasks/ingest/web.py, books.py, code.py), runs it with the configured executor inside a staging
folder (completion markers and logs in `<staging>/logs`, so a rerun after a crash skips finished
tasks), moves the logs to `.<output>.logs`, renames the staging folder into place and returns stats
counted from the written files.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tasks.atomic import atomic_dir, staging_path
from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig

from tasks.executor import run_executor

from .common import count_outputs, log

FINGERPRINT = "ingest-run.json"


def logs_path(output: Path) -> Path:
    """Where a finished run's datatrove logs and per-step stats end up: `.<name>.logs` beside the output."""
    return output.parent / f".{output.name}.logs"


def _fingerprint(cfg, raw: Path) -> dict:
    """What a resumable staging folder must match: config section, source kind and input location."""
    return {"source": type(cfg).__name__, "raw": str(Path(raw).resolve()),
            "config": hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode()).hexdigest()}


def _build(cfg, raw: Path, output: Path) -> tuple[str, list]:
    if isinstance(cfg, WebIngestConfig):
        from . import web

        return "web", web.build_pipeline(cfg, raw, output)
    if isinstance(cfg, BooksIngestConfig):
        from . import books

        return "books", books.build_pipeline(cfg, raw, output)
    if isinstance(cfg, CodeIngestConfig):
        from . import code

        return "code", code.build_pipeline(cfg, raw, output)
    raise TypeError(f"run_ingest needs a Web/Books/CodeIngestConfig section, got {type(cfg).__name__}")


def run_ingest(cfg, inputs: dict[str, Path], output: Path) -> dict:
    if "raw" not in inputs:
        raise ValueError(f"ingest needs --in raw=PATH (a folder, file or glob); got inputs {sorted(inputs)}")
    raw, output = Path(inputs["raw"]).absolute(), Path(output).absolute()  # Slurm/Ray tasks start elsewhere
    fingerprint = _fingerprint(cfg, raw)
    stage = staging_path(output)
    previous = stage / FINGERPRINT
    resume = previous.exists() and json.loads(previous.read_text()) == fingerprint
    if stage.exists() and not resume:
        log.info("ingest: staging folder %s is from another config or input; starting it afresh", stage)
    with atomic_dir(output, resume=resume) as staging:
        (staging / FINGERPRINT).write_text(json.dumps(fingerprint, sort_keys=True))
        source, pipeline = _build(cfg, raw, staging)
        log.info("ingest %s: reading %s with %s executor, %d tasks", source, raw, cfg.executor.kind, cfg.executor.tasks)
        run_executor(cfg.executor, pipeline, staging / "logs", f"ingest-{source}")
        stats = count_outputs(staging)
        (staging / FINGERPRINT).unlink()
        # datatrove's logs/stats carry timestamps: keep them out of the DVC-tracked output so that it is byte-identical
        logs = logs_path(output)
        shutil.rmtree(logs, ignore_errors=True)
        shutil.move(staging / "logs", logs)
    log.info("ingest %s: %d records in, %d documents out (%.1f MB), dropped %s", source, stats["docs_in"],
             stats["docs_out"], stats["bytes_out"] / 1e6, stats["dropped"] or "nothing")
    return stats


__all__ = ["logs_path", "run_ingest"]
