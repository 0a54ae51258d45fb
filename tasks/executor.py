"""Run a datatrove pipeline on the executor an `ExecutorConfig` names: local processes, a Slurm array or Ray.

Shared by the datatrove stages (ingest, filter). A stage's contract is "outputs exist when it returns",
so for Slurm (sbatch returns at once) we poll the completion markers datatrove leaves per task.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from tasks.config.executor import ExecutorConfig

log = logging.getLogger("tinyfoundry.executor")


def make_executor(cfg: ExecutorConfig, pipeline: list, logging_dir: Path, job_name: str):
    """The datatrove executor named by an `ExecutorConfig` (local processes, Slurm array, Ray)."""
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, logging_dir=str(logging_dir))
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cfg.slurm
        return SlurmPipelineExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
                                     job_name=job_name, logging_dir=str(logging_dir),
                                     slurm_logs_folder=s.logging_dir, env_command=s.env_command)
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor kind 'ray' needs Ray, which is not a pipeline dependency: pip install ray") from None
    from datatrove.executor import RayPipelineExecutor

    if cfg.ray.address and not ray.is_initialized():
        ray.init(address=cfg.ray.address)
    return RayPipelineExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, logging_dir=str(logging_dir),
                               cpus_per_task=cfg.ray.cpus_per_task)


def run_executor(cfg: ExecutorConfig, pipeline: list, logging_dir: Path, job_name: str) -> None:
    """Run the pipeline and return when every task has its completion marker (Slurm: poll until then)."""
    executor = make_executor(cfg, pipeline, logging_dir, job_name)
    executor.run()
    if cfg.kind == "slurm":  # sbatch returns at once; the stage's contract is "outputs exist when it returns"
        while pending := executor.get_incomplete_ranks(skip_completed=True):
            log.info("%s: waiting for %d Slurm tasks", job_name, len(pending))
            time.sleep(cfg.slurm.poll_s)
    if missing := executor.get_incomplete_ranks(skip_completed=True):
        raise RuntimeError(f"{job_name}: tasks {missing} did not complete; see {logging_dir} (rerun resumes them)")
