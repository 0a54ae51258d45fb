"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real WARCs, Gutenberg books, eval files); skips the test when it is missing."""
    if not (SHARED_DATA / "web").is_dir() or not (SHARED_DATA / "books").is_dir():
        pytest.skip(f"needs the shared real data at {SHARED_DATA} (web/, books/, eval/); not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_sample(shared_data, request, tmp_path_factory):
    """`real_sample(name, books, code_files)`: a folder shaped like dedup output (tasks/filter/sample.py) with 80
    pages of every shared WARC, the first `books` books and `code_files` standard-library files. trafilatura
    takes ~30 s on the pages, so they are extracted once per session and kept in pytest's cache between runs."""
    from tasks.docs import write_docs
    from tasks.filter.sample import book_docs, build_sample, code_docs

    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider

    def folder(name: str) -> Path:
        return cache.mkdir(name) if cache else tmp_path_factory.mktemp(name)

    web = folder("tinyfoundry_real_web_80_v1") / "docs" / "web.jsonl.gz"

    def sample(name: str, books: int | None, code_files: int) -> Path:
        out = folder(name)
        if not (out / "docs" / "web.jsonl.gz").exists():
            if not web.exists():  # built aside, then renamed: an interrupted build leaves no half file behind
                build_sample(shared_data, web.parents[1] / "building", web_per_file=80, books=0, code_files=0)
                web.parent.mkdir(exist_ok=True)
                os.replace(web.parents[1] / "building" / "docs" / "web.jsonl.gz", web)
            write_docs(out / "docs" / "books.jsonl.gz", book_docs(shared_data / "books", books))
            write_docs(out / "docs" / "code.jsonl.gz", code_docs(code_files))
            # last, and renamed into place: its presence marks the sample complete
            shutil.copyfile(web, out / "docs" / "web.jsonl.gz.tmp")
            os.replace(out / "docs" / "web.jsonl.gz.tmp", out / "docs" / "web.jsonl.gz")
        return out

    return sample


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """An isolated SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def tiny_overrides(tmp_path_factory, shared_data):
    """profiles/tiny.yaml's sources plus PIQA and OpenBookQA items planted in a real book, web page and module,
    so the end-to-end run exercises decontamination (every tiny-profile project of the session uses these)."""
    from tasks.config import read_yaml
    from tests.planted_sources import plant_sources

    planted, _ = plant_sources(shared_data, tmp_path_factory.getbasetemp() / "planted")  # + planted.json
    fetch = read_yaml(PROJECT_ROOT / "profiles" / "tiny.yaml")["fetch"]
    return {"fetch": {s: {"uris": fetch[s]["uris"] + [planted[s]]} for s in ("web", "books", "code")}}


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, shared_data, tiny_overrides):
    """`python -m flows run` on profiles/tiny.yaml inside a project copy, with a Prefect server and an MLflow
    server up (they stay up for the session): the end-to-end run of every real stage. Shared by the e2e checks
    and the reliability suite (its uninterrupted reference), so the suite runs the pipeline once."""
    from flows.servers import running_servers
    from tests.project_copy import client_env, make_project_copy

    project = make_project_copy(tmp_path_factory.mktemp("tiny") / "project", "profiles/tiny.yaml", shared_data,
                                tiny_overrides)
    artifacts = PROJECT_ROOT / "test-artifacts" / "ui-browser"
    artifacts.mkdir(parents=True, exist_ok=True)
    with running_servers(project, 0, 0) as urls:
        env = client_env(urls)
        res = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=900)
        (artifacts / "pipeline.log").write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
        assert res.returncode == 0, f"pipeline failed (log in {artifacts / 'pipeline.log'}):\n{res.stderr[-3000:]}"
        record = json.loads(sorted((project / ".tinyfoundry" / "runs").glob("*.json"))[-1].read_text())
        yield project, urls, env, record, res.stdout
