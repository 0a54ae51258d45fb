"""dvc.yaml is the one DAG: the flow reads it, every params key it names exists in the config model,
and every stage's command is `python -m tasks <stage>` with inputs and outputs DVC knows about."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from flows.dag import load_dag
from tasks.config import ConfigError, load_config
from tasks.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


def resolved_stages() -> dict[str, dict]:
    """dvc.yaml read independently of DVC: foreach expanded, ${train.*} filled from params.yaml."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def fill(text: str, item: str | None) -> str:
        def lookup(m):
            key = m.group(1)
            if key == "item":
                return item
            node = params
            for part in key.split("."):
                node = node[part]
            return str(node)
        return re.sub(r"\$\{([^}]+)\}", lookup, text)

    out = {}
    for name, body in spec.items():
        items = body.get("foreach", [None])
        template = body.get("do", body)
        for item in items:
            text = fill(yaml.safe_dump(template), item)
            out[f"{name}@{item}" if item else name] = yaml.safe_load(text)
    return out


def paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def test_flow_dag_equals_the_dependencies_declared_in_dvc_yaml():
    stages = resolved_stages()
    produced_by = {out: name for name, s in stages.items() for out in paths(s.get("outs"))}
    expected = {name: tuple(sorted({produced_by[d] for d in paths(s.get("deps")) if d in produced_by}))
                for name, s in stages.items()}
    dag = {node.name: node.upstream for node in load_dag(ROOT)}
    assert dag == expected
    order = [node.name for node in load_dag(ROOT)]
    for name, upstream in dag.items():
        assert all(order.index(u) < order.index(name) for u in upstream), f"{name} scheduled before its inputs"


def is_inherited_default(cfg, key: str) -> bool:
    """`ingest.executor`: a section-level default that every child section (ingest.web, ...) inherits."""
    parent, _, leaf = key.rpartition(".")
    try:
        section = cfg.section(parent) if parent else cfg
    except ConfigError:
        return False
    children = [getattr(section, f) for f in type(section).model_fields]
    return bool(children) and all(hasattr(child, leaf) for child in children)


def test_every_params_key_in_dvc_yaml_exists_in_the_config_model():
    cfg = load_config(ROOT / "params.yaml")
    for name, stage in resolved_stages().items():
        for key in stage.get("params", []):
            try:
                cfg.section(key)
            except ConfigError:
                assert is_inherited_default(cfg, key), f"{name}: params key {key} is not in the config model"


def test_each_stage_reads_its_own_section_only():
    """Its own section, plus tracking keys for stages that act on the model registry."""
    for name, stage in resolved_stages().items():
        family, _, source = name.partition("@")
        own = STAGES[family].section.format(source=source)
        keys = stage.get("params", [])
        assert own in keys, f"{name} must track its section {own}"
        cfg = load_config(ROOT / "params.yaml")
        inherited = [k for k in keys if k.startswith(family + ".") and is_inherited_default(cfg, k)]
        others = [k for k in keys if k != own and k not in inherited]
        assert all(k.startswith("tracking.") for k in others), f"{name} tracks another stage's section: {others}"
        if others:
            assert STAGES[family].live_tracking, f"{name} tracks {others} but does not log to MLflow itself"


@pytest.mark.parametrize("name", sorted(resolved_stages()))
def test_stage_commands_call_the_one_cli_with_declared_inputs_and_outputs(name):
    stage = resolved_stages()[name]
    argv = shlex.split(stage["cmd"])
    assert ["-m", "tasks"] == argv[argv.index("-m"):argv.index("-m") + 2]
    assert argv[argv.index("tasks") + 1] == name.split("@")[0]
    deps, outs = paths(stage.get("deps")), paths(stage.get("outs"))
    for flag, value in zip(argv, argv[1:]):
        if flag == "--in":
            assert value.split("=", 1)[1] in deps, f"{name}: input {value} is not a DVC dep"
        if flag == "--out":
            assert value in outs, f"{name}: output {value} is not a DVC out"
    family = name.split("@")[0]
    code = STAGES[family].target.split(":")[0].replace(".", "/")
    assert any(code == d or code.startswith(d.rstrip("/")) or d.startswith(code) for d in deps), \
        f"{name} must list its own code ({code}) as a dependency"


# Modules every stage process loads for the CLI and tracking; they do not change what a stage computes.
ORCHESTRATION = ("tasks/__init__.py", "tasks/__main__.py", "tasks/stages.py", "tasks/tracking.py", "tasks/redact.py",
                 "tasks/config/")


@pytest.mark.parametrize("family", sorted(STAGES))
def test_dvc_deps_cover_all_project_code_a_stage_imports(family):
    """A stage reruns when any of its code changes: every project module its implementation imports is a dep."""
    import subprocess
    import sys

    module = STAGES[family].target.split(":")[0]
    probe = ("import sys, importlib; importlib.import_module(%r); "
             "print('\\n'.join(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)))" % module)
    files = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    own = sorted({Path(f).resolve().relative_to(ROOT).as_posix() for f in files.stdout.split()
                  if any(Path(f).resolve().is_relative_to(ROOT / pkg) for pkg in ("tasks", "models"))})
    stage = next(s for name, s in resolved_stages().items() if name.split("@")[0] == family)
    deps = paths(stage.get("deps"))
    missing = [f for f in own if not f.startswith(ORCHESTRATION)
               and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"{family}: add to its dvc.yaml deps: {missing}"
