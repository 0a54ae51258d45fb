"""The one CLI: `python -m tasks <stage> [source] --in NAME=PATH ... --out PATH`, as dvc.yaml calls it.

It loads params.yaml (validated before any work), hands the stage only its own section, times the
stage function, writes `metrics/<stage>[_<source>].json` and logs the stage to MLflow (rank 0 only).
Other commands: `validate`, `profile FILE` (prints `dvc exp run` arguments), `generate --prompt TEXT`
(completes with `models:/<name>@champion`), `evaluate --model models:/<name>@<alias|version>`,
`lineage models:/<name>@<alias|version> [--json]` (the version's chain back to the fetched files).
A stage holds the project's lock while it runs (tasks/lock.py): while another run writes, it exits with code 3.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from tasks import redact
from tasks.atomic import atomic_write_json, atomic_write_text
from tasks.config import (ConfigError, PipelineConfig, deep_merge, ensure_library_checks, load_config, parse_config,
                          read_yaml)
from tasks.lock import ProjectBusy, project_lock, project_root
from tasks.metrics_schema import conform, missing
from tasks.stages import COMMANDS, STAGES, load_target, metrics_path
from tasks.tracking import FLOW_ENV, flatten, is_rank_zero, log_artifact, log_metrics, stage_run

log = logging.getLogger("tinyfoundry")


def parse_inputs(pairs: list[str]) -> dict[str, Path]:
    inputs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--in expects NAME=PATH, got {pair!r}")
        inputs[name] = Path(path)
    return inputs


def run_stage(name: str, source: str | None, inputs: dict[str, Path], output: Path,
              cfg: PipelineConfig, metrics_file: Path | None = None) -> dict:
    spec = STAGES[name]
    if spec.sources and source not in spec.sources:
        raise SystemExit(f"stage {name} needs a source, one of {', '.join(spec.sources)}; got {source!r}")
    section = cfg.section(spec.section.format(source=source))
    label = f"{name}@{source}" if source else name
    metrics_file = metrics_file or metrics_path(name, source)
    # Under the flow, stages that do not log live are logged by the flow process (MLflow already loaded
    # there); importing MLflow here would add seconds to every stage's start.
    tracked_here = spec.live_tracking or not os.environ.get(FLOW_ENV)
    run_ctx = stage_run(label, section.model_dump(), {"source": source or ""}, cfg.tracking.experiment,
                        cfg.tracking.tracking_uri) if tracked_here else nullcontext()
    with run_ctx as run, tempfile.TemporaryDirectory(prefix=f"tinyfoundry-{name}-") as workdir:
        log.info("stage %s: starting (output %s)", label, output)
        started = time.time()  # the stage's time includes importing its own libraries
        if spec.before and is_rank_zero():
            with run.active() if run is not None else nullcontext():
                inputs = load_target(spec.before)(cfg.tracking, section, inputs, Path(workdir))
        stats = load_target(spec.target)(section, inputs, output) or {}
        ended = time.time()
        stats = conform(name, {**stats, "seconds": round(ended - started, 3)})  # the one metrics schema
        if spec.after and is_rank_zero():
            with run.active() if run is not None else nullcontext():
                stats.update(load_target(spec.after)(cfg.tracking, output, stats) or {})
        finished = time.time()  # the stage's work includes its registry hooks (the flow's busy time)
        if spec.after:
            stats["registry_seconds"] = round(finished - ended, 3)
        if is_rank_zero():
            if gaps := missing(name, stats):
                log.warning("stage %s: its metrics lack %s (tasks/metrics_schema.py)", label, ", ".join(gaps))
            atomic_write_json(metrics_file, stats)
            if tracked_here:
                log_metrics(stats)
                log_artifact(metrics_file)
            if os.environ.get("TINYFOUNDRY_TIMING_FILE"):
                atomic_write_json(os.environ["TINYFOUNDRY_TIMING_FILE"],
                                  {"start": started, "end": finished, "tracked": tracked_here})
    log.info("stage %s: done in %.1f s", label, ended - started)
    return stats


def profile_args(profile: str) -> str:
    """`dvc exp run` arguments that apply a profile file on top of params.yaml."""
    overrides = flatten(read_yaml(profile))
    return " ".join(f"-S {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in overrides.items())


def apply_profile(params: str | Path, profile: str | Path, only: str | None = None) -> dict:
    """Write a profile's values (or only its `only` section) into the params file, keeping its comments,
    quotes and layout (ruamel round-trip); validated before anything is written. Returns the values written,
    flattened."""
    import io

    from ruamel.yaml import YAML

    overrides = read_yaml(profile)
    if only is not None:
        if only not in overrides:
            raise ConfigError(f"profile {profile} has no `{only}` section")
        overrides = {only: overrides[only]}
    parse_config(deep_merge(read_yaml(params), overrides))  # fails, naming the key, before the file changes

    def merge(node, values: dict) -> None:  # as deep_merge: mappings key by key, anything else replaced
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = value

    yaml = YAML(typ="rt")
    yaml.preserve_quotes, yaml.width = True, 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(Path(params).read_text())
    merge(data, overrides)
    out = io.StringIO()
    yaml.dump(data, out)
    atomic_write_text(params, out.getvalue())
    return flatten(overrides)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("TINYFOUNDRY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    redact.install()  # credentials in URIs and env_command never reach a log line or a traceback
    if argv and argv[0] in COMMANDS:
        return load_target(COMMANDS[argv[0]])(argv[1:]) or 0
    if argv[:1] == ["evaluate"] and any(a == "--model" or a.startswith("--model=") for a in argv[1:]):
        # Evaluate a registered version (models:/<name>@<alias|version>) rather than the pipeline's data/model.
        return load_target("tasks.evaluate.cli:evaluate_model_main")(argv[1:]) or 0

    parser = argparse.ArgumentParser(prog="python -m tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=[*STAGES, "validate", "profile", *COMMANDS])
    parser.add_argument("source", nargs="?", help="source name for fetch/ingest; profile file for `profile`")
    parser.add_argument("--in", dest="inputs", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--metrics", type=Path, help="metrics JSON (default metrics/<stage>[_<source>].json)")
    parser.add_argument("--params", default=os.environ.get("TINYFOUNDRY_PARAMS", "params.yaml"))
    parser.add_argument("--profile", help="a profiles/*.yaml file merged over --params")
    parser.add_argument("--apply", action="store_true", help="profile: write its values into --params")
    parser.add_argument("--only", metavar="SECTION", help="profile --apply: only this section (e.g. train)")
    args = parser.parse_args(argv)

    if args.stage == "profile":
        if not args.source:
            parser.error("profile needs a file, e.g. `python -m tasks profile profiles/gpu-125m.yaml`")
        try:
            load_config(args.params, args.source)  # validate before printing or writing anything
            if args.apply:
                written = apply_profile(args.params, args.source, args.only)
                print(f"{args.params}: applied {len(written)} value(s) from {args.source}"
                      + (f" (section {args.only})" if args.only else ""))
                return 0
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        print(profile_args(args.source))
        return 0
    try:
        cfg = load_config(args.params, args.profile)
        # values checked against the code that consumes them; a stage skips this when the same config passed
        ensure_library_checks(cfg, Path(args.params).resolve().parent, force=args.stage == "validate")
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.stage == "validate":
        print(f"{args.params}{' + ' + args.profile if args.profile else ''}: valid")
        return 0
    if args.out is None:
        parser.error(f"stage {args.stage} needs --out")
    try:
        # one writer per project: a stage run by `dvc repro` fails at once while another run writes
        with project_lock(project_root()):
            run_stage(args.stage, args.source, parse_inputs(args.inputs), args.out, cfg, args.metrics)
    except ProjectBusy as e:
        print(f"tinyfoundry: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
