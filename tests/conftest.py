"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""
from __future__ import annotations

import os
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


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """An isolated SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
