"""Tests that need a real component (a server, a browser, a cluster: redis-server, chromium, Ray, Slurm).

On a developer's machine a missing component skips its tests with the reason. Under `CI=true` (.ci/run sets it)
it fails them instead: CI installs every component, so a missing one means the guarantees those tests hold were
silently no longer checked.

    binary = require_binary("redis-server", apt_package="redis-server")     # PATH lookup; the hint names the package
    chromium = require_binary("chromium", apt_package="chromium", install=True)  # apt-get it when root and missing
    ray = require_module("ray", "pip install ray==2.60.0")
    unavailable("slurmctld did not come up: ...")                # any other way a component cannot be had
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with `reason`; under CI=true, fail it."""
    if in_ci():
        pytest.fail(f"{reason}. Under CI=true a missing real component is an error, not a skip", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, apt_package: str | None = None, paths: tuple[str, ...] = (), install: bool = False) -> str:
    """Path of the executable `name` (on PATH or at one of `paths`). When missing: with `install`, the Debian
    package `apt_package` is installed if this process is root; otherwise the component is `unavailable`."""
    for path in (shutil.which(name), *paths):
        if path and os.access(path, os.X_OK):
            return path
    if not (install and apt_package) or os.geteuid() != 0 or not shutil.which("apt-get"):
        hint = f"Debian: apt-get install -y {apt_package}" if apt_package else "install it"
        unavailable(f"needs {name}, which is not installed ({hint}; .ci/run installs it)")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", apt_package]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if res.returncode != 0:
            unavailable(f"needs {name}; `{' '.join(cmd)}` failed: {res.stderr[-500:]}")
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    if found is None:
        unavailable(f"installed {apt_package} but found no {name} executable")
    return found


def require_module(name: str, install_hint: str):
    """The imported module `name`, or the component is `unavailable` (with how to install it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        unavailable(f"needs the Python module {name} ({install_hint}): {e}")
