"""Which datatrove executor runs a data stage: local processes, Slurm or Ray."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class SlurmSettings(Section):
    partition: str = "cpu"
    time: str = "04:00:00"
    """Wall-clock limit of each Slurm array task (sbatch --time)."""
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    logging_dir: str = "logs/slurm"
    """Folder for the sbatch scripts' stdout/stderr (the datatrove logs stay in the stage's staging folder)."""
    env_command: str | None = None
    """Shell line run before each task, e.g. `source .venv/bin/activate`."""
    poll_s: float = Field(30.0, gt=0)
    """How often the stage checks the completion markers while the Slurm array runs."""


class RaySettings(Section):
    address: str | None = None
    """Ray cluster address (`ray://host:10001`); null starts or joins a local Ray."""
    cpus_per_task: int = Field(1, ge=1)


class ExecutorConfig(Section):
    kind: Literal["local", "slurm", "ray"] = "local"
    """datatrove executor: `local` (processes on this machine), `slurm` (sbatch array, the stage waits for it)
    or `ray` (needs `pip install ray`). All skip tasks that left a completion marker, so a rerun resumes."""
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
