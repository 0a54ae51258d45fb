"""Run a datatrove pipeline on the executor an `ExecutorConfig` names: local processes, a Slurm array or Ray.

Shared by the datatrove stages (ingest, filter, dedup with `engine: datatrove`). A stage's contract is
"outputs exist when it returns", so for Slurm (sbatch returns at once) we wait for the completion markers
datatrove leaves per task, watching the array tasks' states (tasks/slurm.py).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from datatrove.executor import SlurmPipelineExecutor
from datatrove.executor.slurm import default_job_id_retriever

from tasks.config.executor import ExecutorConfig

from . import slurm

log = logging.getLogger("tinyfoundry.executor")


class JobIds:
    """datatrove's `job_id_retriever` that also remembers every job id sbatch printed (datatrove keeps
    only the last one, and we watch and, on failure, cancel all of them)."""

    def __init__(self):
        self.ids: list[str] = []

    def __call__(self, sbatch_output: str) -> str:
        job_id = default_job_id_retriever(sbatch_output, job_id_position=-1)
        self.ids.append(str(job_id))
        return job_id


class SlurmArrayExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor minus its stats-merging follow-up job: that job would write into the
    staging folder after the stage has renamed it; `merge_stats` below does it in the stage's process."""

    def launch_merge_stats(self):
        pass


def make_executor(cfg: ExecutorConfig, pipeline: list, logging_dir: Path, job_name: str):
    """The datatrove executor named by an `ExecutorConfig` (local processes, Slurm array, Ray)."""
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, logging_dir=str(logging_dir))
    if cfg.kind == "slurm":
        s = cfg.slurm
        return SlurmArrayExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, time=s.time, partition=s.partition,
                                  cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
                                  job_name=job_name, logging_dir=str(logging_dir), slurm_logs_folder=s.logging_dir,
                                  env_command=s.env_command, job_id_retriever=JobIds(), qos="",
                                  # whole megabytes: sbatch rejects datatrove's "0.5G"
                                  sbatch_args={"mem-per-cpu": f"{max(1, round(s.mem_per_cpu_gb * 1024))}M"})
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor kind 'ray' needs Ray: pip install ray (a pinned project dependency)") from None
    from datatrove.executor import RayPipelineExecutor

    if not ray.is_initialized():
        ray.init(address=cfg.ray.address, log_to_driver=False)
    return RayPipelineExecutor(pipeline, tasks=cfg.tasks, workers=cfg.workers, logging_dir=str(logging_dir),
                               cpus_per_task=cfg.ray.cpus_per_task, mem_per_cpu_gb=cfg.ray.mem_per_cpu_gb)


def merge_stats(logging_dir: Path) -> None:
    """`stats.json` from the per-task `stats/*.json` (what the local and Ray executors write themselves)."""
    from datatrove.utils.stats import PipelineStats

    total = PipelineStats()
    for path in sorted((logging_dir / "stats").glob("*.json")):
        total += PipelineStats.from_json(json.loads(path.read_text()))
    with open(logging_dir / "stats.json", "w") as f:
        total.save_to_disk(f)


def run_executor(cfg: ExecutorConfig, pipeline: list, logging_dir: Path, job_name: str) -> None:
    """Run the pipeline and return when every task has its completion marker.

    Paths in the pipeline must be absolute: Slurm and Ray tasks do not start in this process's folder."""
    executor = make_executor(cfg, pipeline, logging_dir, job_name)
    executor.run()
    if cfg.kind == "slurm":  # sbatch returns at once; the stage's contract is "outputs exist when it returns"
        slurm.wait_for_array(executor, executor.job_id_retriever.ids, cfg.slurm.poll_s, cfg.slurm.max_wait_s,
                             job_name, logging_dir)
        merge_stats(logging_dir)
    if missing := executor.get_incomplete_ranks(skip_completed=True):
        raise RuntimeError(f"{job_name}: tasks {missing} did not complete; see {logging_dir / 'logs'} "
                           "(rerun resumes them)")
