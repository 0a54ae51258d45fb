"""Resume keys: partial work is reused only when the code, inputs and params that define it are unchanged.

A stage that resumes (datatrove completion markers in ingest and filter, training checkpoints) keys its
partial work with `stage_key`:
  code    the SHA-256 of every file under the stage's own deps in dvc.yaml, the deps no stage produces
          (e.g. `tasks/ingest`, `tasks/config/ingest.py`); `models` for train
  inputs  a content digest of each input folder or file (not names and sizes: a same-sized edit counts)
  params  the stage's config section (minus settings that do not change the result)
`resumable_dir` is `atomic_dir` for such stages: it resumes the staging folder when its stored key
matches, and otherwise starts it clean and logs what changed. Training keys its checkpoint folder instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from glob import glob
from pathlib import Path
from typing import Iterator, Mapping

import yaml

from tasks.atomic import atomic_dir, atomic_write_json, staging_path
from tasks.hashing import file_sha256

log = logging.getLogger("tinyfoundry.resume")

KEY_FILE = "resume-key.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Where the running code lives; dvc.yaml sits beside `tasks/` and `models/`."""
FALLBACK_CODE = ("tasks", "models")
"""Hashed whole when no dvc.yaml is found beside the code (an installed package): over-invalidates, never misses."""


def _walk_files(path: Path) -> Iterator[Path]:
    """Files under `path` in a stable order, symlinks not followed (a link counts by its target's name)."""
    if not path.is_dir() or path.is_symlink():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".pyc"):
                yield Path(dirpath) / name


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "symlink:" + os.readlink(path)
    try:
        return file_sha256(path)
    except PermissionError:  # the stage counts it as an unreadable reject; its size and time still key the result
        st = path.stat()
        return f"unreadable:{st.st_size}:{st.st_mtime_ns}"


def code_files(stage: str, root: Path | None = None) -> list[Path]:
    """The files that define `stage` (a DVC address such as `ingest@web`): its deps in dvc.yaml that no stage
    produces, expanded to files. Without a dvc.yaml beside the code: all of `tasks/` and `models/`."""
    root = root or PROJECT_ROOT
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        deps = list(FALLBACK_CODE)
    else:
        stages = yaml.safe_load(dvc_yaml.read_text()).get("stages", {})
        family, _, item = stage.partition("@")
        if family not in stages:
            raise KeyError(f"dvc.yaml has no stage {family!r} (stages: {', '.join(stages)})")
        produced = {out for spec, it in _expanded(stages) for out in _outs(spec, it)}
        deps = [d.replace("${item}", item) for d in _spec(stages[family]).get("deps", [])]
        deps = [d for d in deps if os.path.normpath(d) not in produced]
    files = []
    for dep in deps:
        files.extend(_walk_files(root / dep))
    return files


def _spec(stage: dict) -> dict:
    return stage.get("do", stage)


def _expanded(stages: dict) -> Iterator[tuple[dict, str]]:
    for stage in stages.values():
        for item in stage.get("foreach", [""]) if "foreach" in stage else [""]:
            yield _spec(stage), str(item)


def _outs(spec: dict, item: str) -> Iterator[str]:
    for out in spec.get("outs", []):
        path = next(iter(out)) if isinstance(out, dict) else out
        yield os.path.normpath(path.replace("${item}", item))


def content_digest(path: str | Path) -> str:
    """SHA-256 over the relative names and contents of every file under `path` (a file, folder or glob)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        base, files = (path, list(_walk_files(path))) if path.is_dir() else (path.parent, [path])
    else:  # a glob such as data/raw/*.warc.gz
        base, files = path.parent, sorted(Path(p) for p in glob(str(path)))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(base).as_posix()}\0{_file_digest(f)}\n".encode())
    return h.hexdigest()


def stage_key(stage: str, params: Mapping, inputs: Mapping[str, str | Path], root: Path | None = None) -> dict:
    """What defines a stage's result: its code files, its inputs' contents and its params (JSON-able)."""
    root = root or PROJECT_ROOT
    code = {f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f):
            _file_digest(f) if f.exists() or f.is_symlink() else "missing" for f in code_files(stage, root)}
    return {"stage": stage, "code": code,
            "inputs": {name: content_digest(p) for name, p in sorted(inputs.items())},
            "params": json.loads(json.dumps(params, sort_keys=True, default=str))}


def datatrove_params(cfg) -> dict:
    """A datatrove stage's section as it defines the result: everything but how its executor runs the tasks
    (kind, workers, cluster settings); the number of tasks stays, it fixes the output shards."""
    params = cfg.model_dump(mode="json")
    params["executor"] = {"tasks": cfg.executor.tasks}
    return params


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def describe_changes(old: dict | None, new: dict) -> str:
    """In words: which code files, inputs and params differ between two keys."""
    if not old:
        return "it has no resume key (made by an older version or another tool)"
    parts = []
    old_code, new_code = old.get("code", {}), new["code"]
    changed = sorted(f for f in old_code.keys() | new_code.keys() if old_code.get(f) != new_code.get(f))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        parts.append(f"code changed ({shown})")
    inputs = sorted(n for n in old.get("inputs", {}).keys() | new["inputs"].keys()
                    if old.get("inputs", {}).get(n) != new["inputs"].get(n))
    if inputs:
        parts.append(f"input contents changed ({', '.join(inputs)})")
    params = _changed_params(old.get("params", {}), new["params"])
    if params:
        parts.append(f"params changed ({', '.join(params[:5])}{' ...' if len(params) > 5 else ''})")
    if old.get("stage") != new.get("stage"):
        parts.append(f"it belongs to stage {old.get('stage')!r}")
    return "; ".join(parts) or "its key differs"


def _changed_params(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(old.keys() | new.keys()):
            out += _changed_params(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def read_key(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def resumable_dir(output: str | Path, key: dict) -> Iterator[Path]:
    """`atomic_dir` that resumes the staging folder only if it was made under the same key; otherwise it starts
    clean and says why. The key file is removed before the rename, so outputs do not depend on it."""
    output = Path(output)
    stage = staging_path(output)
    resumed = False
    if stage.exists():
        old = read_key(stage / KEY_FILE)
        if old == key:
            resumed = True
            log.info("%s: resuming the partial output in %s (same code, inputs and params)", key["stage"], stage)
        else:
            log.info("%s: starting clean: the partial output in %s cannot be resumed: %s", key["stage"], stage,
                     describe_changes(old, key))
            shutil.rmtree(stage)
    with atomic_dir(output, resume=resumed) as staging:
        atomic_write_json(staging / KEY_FILE, key)
        yield staging
        (staging / KEY_FILE).unlink()
