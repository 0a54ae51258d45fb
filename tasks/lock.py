"""One writer per project: every run that writes the project's outputs holds `<project>/.tinyfoundry/lock`.

`python -m flows run`, each served flow run and each stage command (`dvc repro` runs `python -m tasks <stage>`)
take it. A second run fails at once with the holder's pid, start time and command (a served run waits or skips,
per `flow.when_busy`). The lock is an OS file lock (`flock`), so the kernel releases it when its holder dies,
however it dies; the holder's description in `lock.json` is then stale and the next run says it takes over.

Processes a holder starts inherit the right to write: the holder's token goes down in TINYFOUNDRY_LOCK_TOKEN
(the flow's stage commands, torchrun and its ranks), and the flow passes the lock's file descriptor to its stage
processes, so a stage orphaned by a killed flow still holds the lock until it exits. Under torchrun only rank 0
takes the lock; the other ranks cannot write anything before rank 0 joins them.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("tinyfoundry.lock")

LOCK_ENV = "TINYFOUNDRY_LOCK_TOKEN"
_held: dict[Path, int] = {}
"""Lock file → descriptor, for the locks this process holds (the flow passes them to its stage processes)."""


class ProjectBusy(RuntimeError):
    """Another run holds the project's lock."""


def project_root(start: str | Path | None = None) -> Path:
    """The folder with dvc.yaml at or above `start` (default: the working directory), else `start` itself."""
    start = Path(start or Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if (p / "dvc.yaml").is_file()), start)


def lock_path(root: str | Path) -> Path:
    return Path(root).resolve() / ".tinyfoundry" / "lock"


def this_process() -> dict:
    """pid, host, start time and command line of this process: enough to tell later whether it still runs."""
    import psutil

    me = psutil.Process()
    return {"pid": me.pid, "host": socket.gethostname(), "started": me.create_time(),
            "command": " ".join(me.cmdline())}


def process_alive(pid: int | str | None, started: float | str | None, host: str | None) -> bool | None:
    """Whether the process that recorded (pid, started, host) still runs; None when it ran on another host."""
    import psutil

    if host and host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(pid))
        return started is None or abs(proc.create_time() - float(started)) < 1.0  # a reused pid has a later start
    except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError, ValueError):
        return False


def describe(holder: dict | None) -> str:
    if not holder:
        return "a process that left no description"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}: {holder.get('command')}"


def _read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def _processes_with_open(path: Path) -> list[str]:
    """Processes that have the lock file open (e.g. stages a killed flow left running)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(Path(f.path) == path for f in proc.open_files()):
                found.append(f"pid {proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
        except (psutil.Error, OSError):
            continue
    return found


def busy_message(root: Path) -> str:
    path = lock_path(root)
    holder = _read_holder(path)
    if holder is None:  # the holder may be between taking the lock and describing itself
        time.sleep(0.2)
        holder = _read_holder(path)
    text = f"the project {root} is in use by another run: {describe(holder)}"
    if holder is None or process_alive(holder.get("pid"), holder.get("started"), holder.get("host")) is False:
        others = _processes_with_open(path)
        text += (f". {'That process has exited, but p' if holder else 'P'}rocesses it started still run and hold "
                 f"the lock: {'; '.join(others) if others else 'not visible from here'}")
    return text + ". Wait for it to finish, or stop it, then run again."


def _try_lock(path: Path) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


@contextmanager
def project_lock(root: str | Path, wait_s: float = 0.0, poll_s: float = 2.0) -> Iterator[dict | None]:
    """Hold the project's lock for the block; yields this process's holder record, or None when an ancestor
    (or torchrun's rank 0) holds it for us. Raises ProjectBusy at once, or after waiting up to `wait_s`."""
    root = Path(root).resolve()
    path = lock_path(root)
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    deadline = time.monotonic() + wait_s
    waiting_logged = False
    while (fd := _try_lock(path)) is None:
        holder = _read_holder(path)
        if holder and os.environ.get(LOCK_ENV) == holder.get("token"):
            yield None  # held by the run that started this process
            return
        if time.monotonic() >= deadline:
            raise ProjectBusy(busy_message(root))
        if not waiting_logged:
            log.info("waiting for the project lock (up to %.0f s): %s", wait_s, busy_message(root))
            waiting_logged = True
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.05)))
    previous = _read_holder(path)
    if previous:
        log.info("taking over the project lock left by %s, which is no longer running", describe(previous))
    holder = {**this_process(), "token": uuid.uuid4().hex, "acquired": time.time()}
    from tasks.atomic import atomic_write_json

    atomic_write_json(path.with_suffix(".json"), holder)
    saved_env = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = holder["token"]
    _held[path] = fd
    try:
        yield holder
    finally:
        _held.pop(path, None)
        if saved_env is None:
            os.environ.pop(LOCK_ENV, None)
        else:
            os.environ[LOCK_ENV] = saved_env
        path.with_suffix(".json").unlink(missing_ok=True)
        os.close(fd)  # releases the flock (children that inherited the descriptor keep it until they exit)


def held_descriptors() -> tuple[int, ...]:
    """Descriptors of the locks this process holds, to pass to the stage processes it starts."""
    return tuple(_held.values())
