"""Make a runnable copy of this project (its code, dvc.yaml, params) in a temporary folder,
optionally with a profile merged into params.yaml — for end-to-end pipeline tests."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tasks.config import deep_merge, read_yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLIENT_ENV_DROP = ("PREFECT_HOME", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                   "TINYFOUNDRY_LOCK_TOKEN")
SKIP = {".venv", "data", "checkpoints", "mlflow.db", "mlartifacts", ".prefect", "dvcstore", ".tinyfoundry",
        "reports", ".git", ".pytest_cache", "test-artifacts", "metrics"}


def project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (what a fresh clone plus work in progress holds)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [PROJECT_ROOT / p for p in out.stdout.splitlines() if (PROJECT_ROOT / p).is_file()]
    return [p for p in PROJECT_ROOT.rglob("*") if p.is_file() and not (set(p.relative_to(PROJECT_ROOT).parts) & SKIP)]


def make_project_copy(dest: Path, profile: str | Path | None = None, shared_data: Path | None = None,
                      overrides: dict | None = None) -> Path:
    """Copy the project to `dest` (a DVC repo without git), merge `profile` and `overrides` into params.yaml.

    Relative `../shared/data` URIs are rewritten to `shared_data` so the copy reads the real data."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in project_files():
        rel = path.relative_to(PROJECT_ROOT)
        if set(rel.parts) & SKIP:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
    params = read_yaml(PROJECT_ROOT / "params.yaml")
    if profile:
        params = deep_merge(params, read_yaml(PROJECT_ROOT / profile))
    if overrides:
        params = deep_merge(params, overrides)
    text = yaml.safe_dump(params, sort_keys=False)
    if shared_data is not None:
        text = text.replace("../shared/data", str(shared_data))
    (dest / "params.yaml").write_text(text)
    (dest / ".dvc").mkdir(exist_ok=True)
    config = dest / ".dvc" / "config"
    body = config.read_text() if config.exists() else ""
    if "no_scm" not in body:
        config.write_text(body.replace("[core]", "[core]\n    no_scm = True", 1) if "[core]" in body
                          else "[core]\n    no_scm = True\n" + body)
    return dest


def client_env(urls=None) -> dict[str, str]:
    """Environment for a run in a project copy: the test process imported flows/ (project defaults for this
    checkout), so the copy gets its own Prefect/MLflow stores, or the servers in `urls`."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP}
    return {**env, **(urls.client_env() if urls else {}), "PYTHONUNBUFFERED": "1"}
