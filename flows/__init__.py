"""Prefect orchestration of the DVC pipeline. Importing this package sets project-local defaults
for Prefect (embedded API, SQLite DB under .prefect/) unless the environment already sets them."""
from __future__ import annotations

import os
from pathlib import Path


def project_env_defaults(root: str | Path | None = None) -> None:
    root = Path(root or Path.cwd()).resolve()
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / '.prefect' / 'prefect.db'}",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LOG_PRINTS": "true",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    (root / ".prefect").mkdir(exist_ok=True)


project_env_defaults()
