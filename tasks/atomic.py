"""Atomic outputs: a stage writes into a staging folder that is renamed into place only when complete.

The staging folder (`.<name>.partial` beside the output) survives a crash, so executors that leave
completion markers (datatrove) resume where they stopped; a finished output is never half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def staging_path(output: Path) -> Path:
    return output.parent / f".{output.name}.partial"


@contextmanager
def atomic_dir(output: str | Path, resume: bool = True) -> Iterator[Path]:
    """Yield a staging folder; on success replace `output` with it. `resume=False` starts it empty."""
    output = Path(output)
    stage = staging_path(output)
    if stage.exists() and not resume:
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    yield stage
    if output.exists():
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    os.replace(stage, output)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
