"""Which datatrove executor runs a data stage: local processes, Slurm or Ray."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class SlurmSettings(Section):
    partition: str = "cpu"
    time: str = "04:00:00"
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    logging_dir: str = "logs/slurm"


class RaySettings(Section):
    address: str | None = None
    """Ray cluster address (`ray://host:10001`); null starts or joins a local Ray."""
    cpus_per_task: int = Field(1, ge=1)


class ExecutorConfig(Section):
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(2, ge=1)
    """Number of datatrove tasks (output shards); fixed per run so outputs are deterministic."""
    workers: int = Field(2, ge=1)
    """Processes running tasks at once (local executor)."""
    slurm: SlurmSettings = SlurmSettings()
    ray: RaySettings = RaySettings()

    @model_validator(mode="after")
    def _workers_le_tasks(self):
        if self.workers > self.tasks:
            raise ValueError(f"workers ({self.workers}) must not exceed tasks ({self.tasks})")
        return self
