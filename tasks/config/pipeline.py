"""Sections read by the orchestration layer (flow, tracking), not by any stage function."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section


class TrackingConfig(Section):
    experiment: str = "tinyfoundry"
    """MLflow experiment that holds one parent run per pipeline run."""
    model_name: str = "tinyfoundry-llama"
    """Registered model name: training adds versions, evaluation moves the `champion` alias."""
    tracking_uri: str | None = None
    """MLflow tracking URI; null means a SQLite store `mlflow.db` in the project. MLFLOW_TRACKING_URI overrides."""


class FlowConfig(Section):
    name: str = "tinyfoundry"
    """Prefect flow name (also the deployment's name)."""
    max_parallel_stages: int = Field(3, ge=1, le=64)
    """How many independent CPU-bound DVC stages may run at once (fetches, which copy or download, run besides)."""
    retries: dict[str, int] = {"fetch": 3}
    """Retries per stage family (the part of the stage name before '@')."""
    retry_delay_s: float = Field(5.0, ge=0)
    schedule_cron: str = "0 3 * * *"
    """Cron schedule of the served deployment (`make serve`)."""
    when_busy: Literal["wait", "skip"] = "wait"
    """What a served (scheduled) run does while another run holds the project lock: wait for it (up to
    busy_wait_s, then fail), or skip this time. Manual runs (`flows run`, `dvc repro`) fail at once."""
    busy_wait_s: float = Field(6 * 3600.0, ge=0)

    @field_validator("schedule_cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression like '0 3 * * *'")
        return v
