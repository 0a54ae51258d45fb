"""One writer per project (tasks/lock.py): a second run fails at once naming the holder, a dead holder's lock
is taken over, processes the holder starts (stage commands, torchrun ranks) write under its lock."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tasks.lock import LOCK_ENV, ProjectBusy, lock_path, project_lock

ROOT = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import subprocess, sys, time
    from tasks.lock import held_descriptors, project_lock
    with project_lock(sys.argv[1]):
        if len(sys.argv) > 2:  # start a child that inherits the lock, as the flow does with its stage processes
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                     pass_fds=held_descriptors())
            print(child.pid, flush=True)
        print("held", flush=True)
        time.sleep(60)
""")


def hold(root: Path, with_child: bool = False) -> tuple[subprocess.Popen, int | None]:
    """A process holding the project's lock (and optionally a child that inherited it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(LOCK_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), *(["child"] if with_child else [])],
                            stdout=subprocess.PIPE, text=True, env=env)
    child = int(proc.stdout.readline()) if with_child else None
    assert proc.stdout.readline().strip() == "held"
    return proc, child


def cli(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(LOCK_ENV, None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path


def test_a_second_run_fails_at_once_naming_the_holder(project):
    holder, _ = hold(project)
    try:
        started = time.monotonic()
        with pytest.raises(ProjectBusy) as err:
            with project_lock(project):
                pass
        assert time.monotonic() - started < 2
        text = str(err.value)
        assert f"is in use by another run: pid {holder.pid} on " in text and ", started 20" in text
        assert f"{sys.executable} -c" in text  # the holder's command line

        # the two commands users start: `python -m flows run` and a stage as `dvc repro` runs it
        flows = cli(["-m", "flows", "run", "--root", str(project)], cwd=project)
        assert flows.returncode == 3 and f"pid {holder.pid}" in flows.stderr, flows.stderr
        stage = cli(["-m", "tasks", "fetch", "eval", "--out", "data/raw/eval"], cwd=project)
        assert stage.returncode == 3 and f"pid {holder.pid}" in stage.stderr, stage.stderr
        assert not (project / "data").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(project, caplog):
    holder, _ = hold(project)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(project).with_suffix(".json").exists()  # it left its description behind
    caplog.set_level(logging.INFO, "tinyfoundry.lock")
    with project_lock(project) as me:
        assert me["pid"] == os.getpid()
    assert f"taking over the project lock left by pid {holder.pid}" in caplog.text
    assert not lock_path(project).with_suffix(".json").exists()


def test_processes_started_by_the_holder_write_under_its_lock(project):
    probe = "import sys; from tasks.lock import project_lock\nwith project_lock(sys.argv[1]) as h: print(h is None)"
    with project_lock(project) as me:
        assert os.environ[LOCK_ENV] == me["token"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # what a child of the holder inherits
        child = subprocess.run([sys.executable, "-c", probe, str(project)], env=env, capture_output=True, text=True)
        assert child.stdout.strip() == "True", child.stderr  # nested: it neither waits nor fails
        stranger = subprocess.run([sys.executable, "-c", probe, str(project)], capture_output=True, text=True,
                                  env={k: v for k, v in env.items() if k != LOCK_ENV})
        assert stranger.returncode != 0 and "ProjectBusy" in stranger.stderr
        rank1 = subprocess.run([sys.executable, "-c", probe, str(project)], capture_output=True, text=True,
                               env={**{k: v for k, v in env.items() if k != LOCK_ENV}, "RANK": "1"})
        assert rank1.stdout.strip() == "True"  # torchrun: rank 0 holds the lock for the job
    assert LOCK_ENV not in os.environ


def test_a_stage_orphaned_by_a_killed_holder_keeps_the_lock(project):
    holder, child = hold(project, with_child=True)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        with pytest.raises(ProjectBusy, match=rf"has exited, but processes it started still run .*pid {child}"):
            with project_lock(project):
                pass
    finally:
        psutil.Process(child).kill()
        psutil.Process(child).wait(10)
    with project_lock(project) as me:  # free once the orphan is gone
        assert me is not None


def test_a_waiting_run_gets_the_lock_when_the_holder_finishes(project):
    holder, _ = hold(project)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1.5); os.kill({holder.pid}, 9)"])
    try:
        started = time.monotonic()
        with project_lock(project, wait_s=30, poll_s=0.2) as me:
            assert me is not None and time.monotonic() - started >= 1.0
        with pytest.raises(ProjectBusy):
            held, _ = hold(project)
            try:
                with project_lock(project, wait_s=0.5, poll_s=0.1):
                    pass
            finally:
                held.kill()
                held.wait()
    finally:
        killer.wait()
        holder.wait()


def test_a_dvc_lock_file_left_corrupted_or_by_dead_processes_is_removed_and_a_live_one_kept(tmp_path):
    """A SIGKILL while DVC rewrites .dvc/tmp/rwlock left half a JSON file that failed every later run (seen in the
    reliability suite); the flow repairs it under the project lock."""
    import json
    import os

    from flows.recovery import repair_dvc_rwlock

    path = tmp_path / ".dvc" / "tmp" / "rwlock"
    path.parent.mkdir(parents=True)
    assert repair_dvc_rwlock(tmp_path) is False  # no file
    for text in ('{"read": {"data/raw": [{"pi', ""):
        path.write_text(text)
        assert repair_dvc_rwlock(tmp_path) is True and not path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"read": {}, "write": {"data/raw": {"pid": int(dead.stdout), "cmd": "dvc repro"}}}))
    assert repair_dvc_rwlock(tmp_path) is True and not path.exists()
    path.write_text(json.dumps({"read": {"data/raw": [{"pid": os.getpid(), "cmd": "dvc status"}]}, "write": {}}))
    assert repair_dvc_rwlock(tmp_path) is False and path.exists()
