"""Waiting for a datatrove Slurm array: completion markers, the array tasks' states, and a deadline.

`sbatch` returns at once, and a task Slurm kills (out of memory, past its time limit, node failure) never
writes its completion marker, so polling markers alone would wait forever. Each poll therefore also asks
Slurm for the tasks' states (`scontrol show job`, which needs no accounting database; `sacct` once
slurmctld has forgotten a finished job) and fails the stage on the first task that ended badly, naming
its log and why it ended.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tinyfoundry.executor")

RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
           "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD"}
FAILED = {"FAILED", "OUT_OF_MEMORY", "TIMEOUT", "CANCELLED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
          "SPECIAL_EXIT", "REVOKED"}
# what slurmstepd writes into a task's log when it kills it (the state alone says FAILED without cgroups)
CAUSES = [(re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out of memory", re.I), "killed for exceeding its memory"),
          (re.compile(r"DUE TO TIME LIMIT", re.I), "killed at its time limit"),
          (re.compile(r"DUE TO NODE FAILURE", re.I), "lost with its node")]
STATE_CAUSES = {"OUT_OF_MEMORY": "killed for exceeding its memory", "TIMEOUT": "killed at its time limit",
                "NODE_FAIL": "lost with its node", "DEADLINE": "past its deadline", "PREEMPTED": "preempted"}


class SlurmTaskFailed(RuntimeError):
    """An array task ended in a failed state; the message names the task, its state, cause and log."""


@dataclass(frozen=True)
class TaskState:
    job_id: str
    """`<array job>_<task>` (or a plain job id)."""
    state: str
    reason: str = ""
    exit_code: str = ""
    log: str = ""
    """The task's stdout file (datatrove points stderr there too)."""


def parse_scontrol(text: str) -> list[TaskState]:
    """`scontrol show job -o <id>`: one line per array task (a pending range is one line)."""
    out = []
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in fields:
            continue
        job = fields.get("ArrayJobId") or fields.get("JobId", "?")
        task = fields.get("ArrayTaskId")
        out.append(TaskState(f"{job}_{task}" if task else job, fields["JobState"], fields.get("Reason", ""),
                             fields.get("ExitCode", ""), fields.get("StdOut", "")))
    return out


def parse_sacct(text: str) -> list[TaskState]:
    """`sacct -X -n -P -o JobID,State,ExitCode -j <id>`; `CANCELLED by 0` is CANCELLED."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3:
            out.append(TaskState(parts[0], parts[1].split()[0] if parts[1] else "", "", parts[2]))
    return out


def task_states(job_id: str) -> list[TaskState] | None:
    """States of every task of an array job, or None when Slurm no longer knows the job (or cannot be asked)."""
    if shutil.which("scontrol"):
        res = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=60)
        if res.returncode == 0 and (states := parse_scontrol(res.stdout)):
            return states
    if shutil.which("sacct"):
        res = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", str(job_id)],
                             capture_output=True, text=True, timeout=60)
        if res.returncode == 0 and (states := parse_sacct(res.stdout)):
            return states
    return None


def cause(task: TaskState) -> str:
    """Why a task ended, in words: from its state, else from what slurmstepd wrote into its log."""
    if task.state in STATE_CAUSES:
        return STATE_CAUSES[task.state]
    try:
        tail = Path(task.log).read_text(errors="replace")[-20_000:] if task.log else ""
    except OSError:
        tail = ""
    for pattern, words in CAUSES:
        if pattern.search(tail):
            return words
    return f"exit code {task.exit_code}" if task.exit_code else "failed"


def cancel(job_ids: list[str]) -> None:
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *map(str, job_ids)], capture_output=True, timeout=60)


def wait_for_array(executor, job_ids: list[str], poll_s: float, max_wait_s: float, job_name: str,
                   logging_dir: Path) -> None:
    """Return when every rank has its completion marker; raise `SlurmTaskFailed` as soon as one array task
    ended badly, or `TimeoutError` after `max_wait_s` (both cancel the jobs still queued or running)."""
    started = time.time()
    while pending := executor.get_incomplete_ranks(skip_completed=True):
        states = [s for job in job_ids for s in (task_states(job) or [])]
        failed = [s for s in states if s.state in FAILED]
        if failed:
            cancel(job_ids)
            first = failed[0]
            raise SlurmTaskFailed(
                f"{job_name}: Slurm task {first.job_id} ended {first.state} ({cause(first)}); its log: "
                f"{first.log or '(unknown)'}; datatrove task logs in {logging_dir / 'logs'}"
                + (f"; {len(failed) - 1} more task(s) failed" if len(failed) > 1 else "")
                + " (a rerun resumes the unfinished tasks)")
        if states and not any(s.state in RUNNING for s in states):
            # all tasks ended well, yet markers are missing: give the shared filesystem one more poll
            time.sleep(min(poll_s, 5))
            if executor.get_incomplete_ranks(skip_completed=True):
                raise SlurmTaskFailed(f"{job_name}: every Slurm task ended but ranks {pending} left no completion "
                                      f"marker in {logging_dir}; see {logging_dir / 'logs'}")
            return
        waited = time.time() - started
        if waited > max_wait_s:
            cancel(job_ids)
            raise TimeoutError(f"{job_name}: {len(pending)} Slurm task(s) not done after {waited:.0f} s "
                               f"(slurm.max_wait_s = {max_wait_s:.0f}); jobs {job_ids} cancelled; states: "
                               f"{sorted({s.state for s in states}) or 'unknown'}")
        log.info("%s: waiting for %d Slurm task(s) of job(s) %s (%s)", job_name, len(pending), ", ".join(job_ids),
                 ", ".join(sorted({s.state for s in states})) or "state unknown")
        time.sleep(poll_s)
