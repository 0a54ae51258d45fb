"""Checks that span sections, or that need the code the stages run, so that a bad value fails before any work.

`cross_section_errors` runs on every load (cheap: no imports). `library_errors` checks values against the
code that will consume them — datatrove filter signatures, the model presets (torch), lm-eval's task list —
and costs a few seconds of imports, so `ensure_library_checks` remembers a pass per (config, code, library
versions) in `.tinyfoundry/config-checks/`: under `dvc repro` the first stage pays, the others find the mark.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import re
import urllib.parse
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from .base import ConfigError
from .evaluate import FORMATS
from .ingest import IngestConfig
from .train import TrainConfig

SOURCES = tuple(IngestConfig.model_fields)  # every document's metadata.source is one of the ingested sources


def cross_section_errors(cfg) -> list[str]:
    """Values of one section that must agree with another's (`cfg` is a PipelineConfig)."""
    errors = []
    listed = ", ".join(SOURCES)
    for key, names in (("mix.text_weights", cfg.mix.text_weights),
                       ("tokenizer.sample_weights", cfg.tokenizer.sample_weights)):
        if unknown := sorted(set(names) - set(SOURCES)):
            errors.append(f"{key} names source(s) {unknown} that no stage produces; sources: {listed}")
    if cfg.mix.code_source not in SOURCES:
        errors.append(f"mix.code_source {cfg.mix.code_source!r} is not a source; sources: {listed}")
    mixed = {*cfg.mix.text_weights, cfg.mix.code_source}
    if absent := [s for s in cfg.evaluate.sources if s not in mixed]:
        errors.append(f"evaluate.sources {absent} are not in the mix (mix.text_weights, mix.code_source), so they "
                      f"have no held-out documents; mixed sources: {sorted(mixed)}")
    return errors + eval_file_errors(cfg)


def _fetched_names(fetch) -> tuple[set[str], list[str]] | None:
    """(file names, name patterns) that `fetch` will place at the top of its folder; None when that cannot be
    known before fetching (a git repository, a directory, a placeholder)."""
    names, patterns = set(), []
    for uri in fetch.uris:
        parsed = urllib.parse.urlparse(uri)
        if "{" in uri or uri.endswith(".git") or uri.startswith(("git@", "git://")):
            return None
        if parsed.scheme in ("http", "https"):
            names.add(Path(parsed.path).name or "index.html")
        elif any(c in uri for c in "*?["):
            found = [Path(p).name for p in glob.glob(uri, recursive=True) if Path(p).is_file()]
            if found:
                names.update(found)
            else:  # not there (yet): the mirror may hold it, or fetch will fail; the name pattern must match
                patterns.append(Path(uri).name)
        elif Path(uri).is_dir():
            return None
        else:
            names.add(Path(uri).name)
    mirror = os.environ.get("TINYFOUNDRY_MIRROR") or fetch.mirror
    if mirror and Path(mirror).is_dir():
        names.update(p.name for p in Path(mirror).iterdir())
    return names, patterns


def eval_file_errors(cfg) -> list[str]:
    """A benchmark file named relative to the fetched eval folder must be one `fetch.eval.uris` brings."""
    fetched = _fetched_names(cfg.fetch.eval)
    if fetched is None:
        return []
    names, patterns = fetched
    errors = []
    for i, task in enumerate(cfg.evaluate.tasks):
        for field in ("data", "labels"):
            ref = getattr(task, field)
            if ref is None or "://" in ref or "/" in ref or Path(ref).is_absolute():
                continue
            if ref not in names and not any(fnmatch.fnmatch(ref, p) for p in patterns):
                errors.append(f"evaluate.tasks[{i}].{field} {ref!r} ({task.name}) is not among the files fetch.eval.uris "
                              f"brings: {sorted(names) + patterns}")
    return errors


# --------------------------------------------------------------------------------- checks that import code


def model_errors(train: TrainConfig, vocab_size: int) -> list[str]:
    """The preset with its overrides builds a valid ModelConfig whose context holds train.seq_len."""
    from typing import get_type_hints

    from pydantic import TypeAdapter, ValidationError

    from models import ModelConfig, build_config

    preset, overrides = train.model.preset, train.model.overrides
    fields = get_type_hints(ModelConfig)
    if unknown := sorted(set(overrides) - set(fields)):
        allowed = sorted(set(fields) - {"vocab_size"})
        return [f"train.model.overrides: unknown ModelConfig field(s) {unknown}; fields: {', '.join(allowed)}"]
    errors = []
    for key, value in overrides.items():
        try:
            TypeAdapter(fields[key]).validate_python(value, strict=True)
        except ValidationError:
            errors.append(f"train.model.overrides.{key} must be {fields[key].__name__}, got {value!r}")
    if errors:
        return errors
    try:
        model = build_config(preset, vocab_size, **overrides)
    except ValueError as e:
        return [f"train.model (preset {preset} with overrides {overrides}): {e}"]
    if train.seq_len > model.max_seq_len:
        errors.append(f"train.seq_len ({train.seq_len}) exceeds the context of the model (preset {preset}: "
                      f"max_seq_len {model.max_seq_len}); lower train.seq_len to at most {model.max_seq_len} or set "
                      "train.model.overrides.max_seq_len")
    return errors


def _lm_eval_task_names() -> set[str]:
    """Task, group and tag names declared in lm-eval's task YAMLs (a text scan: ~1 s instead of ~15 s of indexing)."""
    root = Path(find_spec("lm_eval").submodule_search_locations[0]) / "tasks"
    declared = re.compile(r"^(?:task|group|tag):\s*[\"']?([^\s\"'#]+)", re.M)
    return {m.group(1) for p in root.rglob("*.yaml") for m in declared.finditer(p.read_text(errors="replace"))}


def eval_task_errors(evaluate) -> list[str]:
    """A task without a data file runs as the standard lm-eval task of that name, which must exist."""
    standard = [t.name for t in evaluate.tasks if t.data is None]
    missing = [n for n in standard if n not in _lm_eval_task_names()] if standard else []
    if missing:  # the scan misses tasks made in Python: ask lm-eval's own index before calling a name unknown
        from lm_eval.tasks import TaskManager

        known = set(TaskManager().all_tasks)
        missing = [n for n in missing if n not in known]
    return [f"evaluate.tasks: {name!r} has no data file and is not an lm-eval task; give it `data:` (a file in one of "
            f"the formats {', '.join(FORMATS)}) or use an lm-eval task name (`lm-eval ls tasks`)" for name in missing]


def library_errors(cfg) -> list[str]:
    return [*cfg.filter.heuristic_errors(), *model_errors(cfg.train, cfg.tokenizer.vocab_size),
            *eval_task_errors(cfg.evaluate)]


def _checks_key(cfg) -> str:
    """What a pass depends on: the whole config, the code of the checks and of what they inspect, library versions."""
    h = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode())
    code = [Path(__file__).parent, Path(find_spec("models").origin).parent, Path(__file__).parents[1] / "filter"]
    for path in sorted(p for folder in code for p in folder.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    for lib in ("datatrove", "torch", "lm_eval", "pydantic"):
        h.update(f"{lib}={metadata.version(lib)}".encode())
    return h.hexdigest()[:24]


def ensure_library_checks(cfg, root: str | Path | None, force: bool = False) -> None:
    """Raise ConfigError naming every bad value `library_errors` finds; skipped when this exact config passed
    before with the same code and libraries (`root`: the project folder holding `.tinyfoundry/`; None: no memory)."""
    mark = Path(root) / ".tinyfoundry" / "config-checks" / _checks_key(cfg) if root is not None else None
    if mark is not None and mark.exists() and not force:
        return
    if errors := library_errors(cfg):
        raise ConfigError("; ".join(errors))
    if mark is not None:
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
        except OSError:
            pass  # a read-only project still runs; it just checks again next time
