"""Executor settings and the Slurm array watcher's reading of Slurm's own output (the real cluster runs are in
tests/test_slurm_cluster.py and tests/test_ray_cluster.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config.base import available_cpus
from tasks.config.executor import ExecutorConfig
from tasks.slurm import TaskState, cause, parse_sacct, parse_scontrol

ROOT = Path(__file__).resolve().parents[1]


def test_workers_auto_uses_every_available_core_up_to_tasks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)))
    assert available_cpus() == 24
    assert ExecutorConfig(tasks=64, workers="auto").workers == 24
    assert ExecutorConfig(tasks=8, workers="auto").workers == 8  # never more than the tasks
    assert ExecutorConfig(kind="slurm", tasks=64, workers="auto").workers == 64  # the cluster schedules them
    assert ExecutorConfig(kind="ray", tasks=64, workers="auto").workers == 64
    with pytest.raises(ValidationError, match="positive integer or 'auto'"):
        ExecutorConfig(tasks=8, workers="all")


def test_dedup_processes_auto(monkeypatch):
    from tasks.config.dedup import DedupConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert DedupConfig(processes="auto").processes == 3
    with pytest.raises(ValidationError, match="positive integer or 'auto'"):
        DedupConfig(processes="max")


# recorded from the real single-node cluster (slurm-wlm 22.05, tests/clusters.py)
SCONTROL = (
    "JobId=3 ArrayJobId=1 ArrayTaskId=1 JobName=ingest-books UserId=root(0) JobState=FAILED Reason=JobLaunchFailure "
    "Dependency=(null) ExitCode=0:9 RunTime=00:00:01 StdErr=/x/logs/1_1.out StdIn=/dev/null StdOut=/x/logs/1_1.out\n"
    "JobId=2 ArrayJobId=1 ArrayTaskId=0 JobName=ingest-books UserId=root(0) JobState=COMPLETED Reason=None "
    "ExitCode=0:0 StdOut=/x/logs/1_0.out\n"
    "JobId=7 ArrayJobId=7 ArrayTaskId=2-5%2 JobName=ingest-books JobState=PENDING Reason=JobArrayTaskLimit "
    "StdOut=/x/logs/%A_%a.out\n")


def test_scontrol_and_sacct_records_are_read():
    states = parse_scontrol(SCONTROL)
    assert [(s.job_id, s.state, s.log) for s in states] == [
        ("1_1", "FAILED", "/x/logs/1_1.out"), ("1_0", "COMPLETED", "/x/logs/1_0.out"),
        ("7_2-5%2", "PENDING", "/x/logs/%A_%a.out")]
    assert states[0].exit_code == "0:9"
    sacct = parse_sacct("5_0|COMPLETED|0:0\n5_1|CANCELLED by 0|0:15\n5_2|OUT_OF_MEMORY|0:125\n")
    assert [(s.job_id, s.state) for s in sacct] == [("5_0", "COMPLETED"), ("5_1", "CANCELLED"),
                                                     ("5_2", "OUT_OF_MEMORY")]


def test_failure_causes_from_state_or_log(tmp_path):
    log = tmp_path / "1_1.out"
    log.write_text("slurmstepd-vm: error: StepId=3.batch exceeded memory limit (115036160 > 104857600), being killed\n")
    assert cause(TaskState("1_1", "FAILED", log=str(log))) == "killed for exceeding its memory"
    log.write_text("slurmstepd: error: *** JOB 9 ON vm CANCELLED AT 2026-12-01T10:00:00 DUE TO TIME LIMIT ***\n")
    assert cause(TaskState("1_1", "TIMEOUT", log=str(log))) == "killed at its time limit"
    assert cause(TaskState("1_1", "CANCELLED", log=str(log))) == "killed at its time limit"
    assert cause(TaskState("1_1", "OUT_OF_MEMORY")) == "killed for exceeding its memory"
    assert cause(TaskState("1_1", "FAILED", exit_code="1:0", log=str(tmp_path / "none"))) == "exit code 1:0"


def test_profile_apply_writes_one_section_and_keeps_comments(tmp_path):
    from tasks.config import load_config

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    run = lambda *a: subprocess.run([sys.executable, "-m", "tasks", "profile", *a, "--params", str(params)],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True)
    res = run("profiles/tiny.yaml", "--apply", "--only", "train")
    assert res.returncode == 0, res.stderr
    applied, original = load_config(params), load_config(ROOT / "params.yaml")
    assert applied.train == load_config(ROOT / "params.yaml", ROOT / "profiles" / "tiny.yaml").train
    assert applied.ingest == original.ingest and applied.evaluate == original.evaluate  # other sections untouched
    text = params.read_text()
    assert "# CPU demo profile" in text and 'schedule_cron: "0 3 * * *"' in text and "tracking_uri: null" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {max_steps: -1}\n")
    before = params.read_text()
    res = run(str(bad), "--apply")
    assert res.returncode == 2 and "train.max_steps" in res.stderr and params.read_text() == before
