"""Which datatrove executor runs a data stage: local processes, Slurm or Ray."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .base import Section, available_cpus, resolve_auto


class SlurmSettings(Section):
    partition: str = "cpu"
    time: str = "04:00:00"
    """Wall-clock limit of each Slurm array task (sbatch --time). A task that runs past it fails the stage."""
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    """Memory per CPU (sbatch --mem-per-cpu). A task that needs more is killed by Slurm and fails the stage."""
    logging_dir: str = "logs/slurm"
    """Folder for the sbatch scripts' stdout/stderr (the datatrove logs stay in the stage's staging folder)."""
    env_command: str | None = None
    """Shell line run before each task, e.g. `source .venv/bin/activate`."""
    poll_s: float = Field(30.0, gt=0)
    """How often the stage checks the completion markers and the array tasks' states while the array runs."""
    max_wait_s: float = Field(172_800.0, gt=0)
    """Deadline for the whole array (queueing included): past it the stage cancels the jobs and fails."""


class RaySettings(Section):
    address: str | None = None
    """Ray cluster: `HOST:PORT` of a running cluster's head (what `ray start --head` prints), `auto` (the
    cluster on this machine or $RAY_ADDRESS), or `ray://HOST:10001` (Ray Client, needs `ray[client]`);
    null: $RAY_ADDRESS if set, else a Ray started inside the stage's process on this machine."""
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    """Memory Ray reserves per CPU of a task: a node runs only as many tasks as its memory holds."""


class ExecutorConfig(Section):
    kind: Literal["local", "slurm", "ray"] = "local"
    """datatrove executor: `local` (processes on this machine), `slurm` (sbatch array, the stage waits for it)
    or `ray` (a Ray cluster). All skip tasks that left a completion marker, so a rerun resumes."""
    tasks: int = Field(2, ge=1)
    """Number of datatrove tasks (output shards); fixed per run so outputs are deterministic. It bounds the
    parallelism: a machine or cluster runs at most `tasks` at once."""
    workers: int = Field(2, ge=1)
    """Tasks running at once, or `auto`: local, one per available core (at most `tasks`); Slurm and Ray,
    all `tasks` (the cluster's scheduler decides what fits)."""
    slurm: SlurmSettings = SlurmSettings()
    ray: RaySettings = RaySettings()

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, v, info: ValidationInfo):
        tasks = info.data.get("tasks", 1)  # kind and tasks are validated before workers (field order)
        local = info.data.get("kind", "local") == "local"
        return resolve_auto(v, min(available_cpus(), tasks) if local else tasks)

    @model_validator(mode="after")
    def _workers_le_tasks(self):
        if self.workers > self.tasks:
            raise ValueError(f"workers ({self.workers}) must not exceed tasks ({self.tasks})")
        return self
