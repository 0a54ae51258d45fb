"""requirements.lock (installed with `pip install --no-deps -r`) must hold every dependency of pyproject.toml at a
version its pins allow, and be closed: every requirement of every locked package (with the extras asked for)
is locked too. Fails when a dependency is added to pyproject.toml without `make lock`."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from train_helpers import ROOT

LOCK = ROOT / "requirements.lock"
INSTALLED_APART = {"torch"}  # `make setup` installs torch first with pip (CPU wheel here, CUDA elsewhere)


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            pins[canonicalize_name(m[1])] = m[2]
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in (extras or {""}))


def test_every_pyproject_pin_is_in_the_lock():
    pins = locked()
    assert len(pins) > 100, "requirements.lock looks empty: run `make lock`"
    problems = []
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name in INSTALLED_APART:
            continue
        if name not in pins:
            problems.append(f"{req} is not in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} but requirements.lock pins {name}=={pins[name]}")
    assert not problems, "run `make lock`: " + "; ".join(problems)
    assert canonicalize_name("torch") not in pins  # torch comes from its own pip step (Makefile)


def test_the_lock_is_closed_over_dependencies():
    """Walk the requirements from pyproject.toml through the installed packages' metadata."""
    pins = locked()
    todo = [(req, set(req.extras)) for req in project_requirements()]
    seen: set[tuple[str, frozenset]] = set()
    problems = []
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        if name not in INSTALLED_APART:
            if name not in pins:
                problems.append(f"{name} (needed via {req}) is not locked")
                continue
            if not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{req} is not met by the locked {name}=={pins[name]}")
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is locked but not installed: run `make setup`")
            continue
        for dep in map(Requirement, requires):
            if applies(dep, extras):
                todo.append((dep, set(dep.extras)))
    assert not problems, "; ".join(sorted(set(problems)))


def test_makefile_installs_the_torch_pyproject_pins():
    torch_pin = next(str(r.specifier) for r in project_requirements() if r.name == "torch")
    assert f"torch{torch_pin} " in (ROOT / "Makefile").read_text()
