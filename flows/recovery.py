"""Crash hygiene for Prefect: flow runs of this project whose process died are marked Crashed on the next start.

A SIGKILL (or an OOM kill, a power cut) gives Prefect no chance to record the end of a run, so it would show
Running forever. Each flow run records its process as the run's `infrastructure_pid` (`host:pid:start`); the
next run of the project, holding the project lock, marks every Running flow run of the same project root whose
process is gone as Crashed, and its unfinished task runs as Crashed (running) or Cancelled (never started).
"""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tasks.lock import process_alive, this_process

log = logging.getLogger("tinyfoundry.recovery")

UNMARKED_GRACE = timedelta(minutes=2)
"""A Running flow run without a recorded process is left alone this long (it may be starting up)."""


def process_marker() -> str:
    me = this_process()
    return f"{me['host']}:{me['pid']}:{me['started']:.2f}"


def marker_alive(marker: str | None) -> bool | None:
    """False when the marked process is gone; None when unknown (no marker, or another host)."""
    if not marker or marker.count(":") < 2:
        return None
    host, pid, started = marker.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    return process_alive(pid, started, host)


def mark_this_process(client, flow_run_id) -> None:
    client.update_flow_run(flow_run_id, infrastructure_pid=process_marker())


def crash_abandoned_runs(client, root: Path, current_id) -> list[str]:
    """Mark Running flow runs of this project (parameter `root`) whose process is gone as Crashed; returns names."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterState,
                                                FlowRunFilterStateType, TaskRunFilter, TaskRunFilterState,
                                                TaskRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
    from prefect.states import Cancelled, Crashed

    running = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.CANCELLING]))),
        sort=FlowRunSort.START_TIME_DESC, limit=200)
    now = datetime.now(timezone.utc)
    crashed = []
    for run in running:
        if run.id == current_id or "root" not in run.parameters or Path(str(run.parameters["root"])).resolve() != root:
            continue
        alive = marker_alive(run.infrastructure_pid)
        if alive is None and not run.infrastructure_pid:  # older runs and runs still starting up record none
            started = run.start_time or run.expected_start_time
            alive = None if started and now - started < UNMARKED_GRACE else False
        if alive is not False:
            continue
        why = f"its process ({run.infrastructure_pid or 'not recorded'}) is gone; found by a later run of the project"
        client.set_flow_run_state(run.id, Crashed(message=f"Crashed: {why}"), force=True)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]))),
            sort=TaskRunSort.ID_DESC, limit=200)
        for task_run in tasks:
            if task_run.state_type == StateType.RUNNING:
                state = Crashed(message="Crashed: the flow run's process died while this task ran")
            else:
                state = Cancelled(message="Cancelled: the flow run's process died before this task started")
            client.set_task_run_state(task_run.id, state, force=True)
        log.info("marked flow run %s Crashed (%s) and %d unfinished task run(s)", run.name, why, len(tasks))
        crashed.append(run.name)
    return crashed


def repair_dvc_rwlock(root: Path) -> bool:
    """Remove DVC's stage read/write lock file when a killed run left it half written or held by dead processes.

    DVC rewrites `.dvc/tmp/rwlock` in place, so a SIGKILL during a write leaves JSON that every later `dvc`
    command refuses ("RWLock-file ... JSON structure is corrupted"). Called while holding the project lock."""
    import json

    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        lock = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (ValueError, UnicodeDecodeError):
        path.unlink(missing_ok=True)
        log.warning("removed DVC's lock file %s: a killed run left it corrupted", path)
        return True
    holders = [info for entries in (lock.get("read") or {}).values() for info in entries]
    holders += list((lock.get("write") or {}).values())
    if holders and not any(process_alive(h.get("pid", 0), None, None) for h in holders if isinstance(h, dict)):
        path.unlink(missing_ok=True)
        log.warning("removed DVC's lock file %s: every process it names is gone", path)
        return True
    return False
