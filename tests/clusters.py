"""Real local clusters for tests: a Ray cluster (head + one worker node) and a single-node Slurm cluster.

Both are started from the real daemons (`ray start`; Debian's `munged`, `slurmctld`, `slurmd`) in a
private folder with their own ports, sockets and config, so they do not touch a system-wide install or
another test run, and are stopped by the process groups this module started (never `ray stop`, which
stops every Ray on the machine).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM each process group we started (children included), then SIGKILL what is left."""
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    for p in reversed(procs):
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        try:  # the daemons a `ray start --block` forked stay in its group after it exits
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def _wait_for(check, what: str, timeout_s: float, logs: list[Path], procs: list[subprocess.Popen] = ()) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    exited = [p.args[0] for p in procs if p.poll() is not None]
    why = f"exited ({', '.join(map(str, exited))})" if exited else f"did not come up within {timeout_s:.0f} s"
    raise RuntimeError(f"{what} {why}\n{tails}")


# ------------------------------------------------------------------------------------------------------ Ray

@contextmanager
def ray_cluster(root: Path, nodes: int = 2, cpus_per_node: int = 1, memory_gb: float = 2.0,
                object_store_mb: int = 100) -> Iterator[str]:
    """`ray start --head` plus `nodes - 1` worker node processes on this machine; yields the GCS address with
    this process connected to it (`ray.init`).

    Ray binds to this machine's own address (it maps 127.0.0.1 to it, so workers on other hosts could join);
    nothing beyond this machine is contacted. Small CPU, memory and object-store limits keep two nodes within
    a 2-core, 24 GB machine; every port is picked free, so runs do not collide.
    """
    import ray

    port = free_port()
    address = f"127.0.0.1:{port}"
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def node_args() -> list[str]:
        return [f"--num-cpus={cpus_per_node}", f"--memory={int(memory_gb * 2**30)}",
                f"--object-store-memory={object_store_mb * 2**20}", "--disable-usage-stats", "--block",
                "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}"]

    procs: list[subprocess.Popen] = []
    logs = [root / f"node{i}.log" for i in range(nodes)]
    commands = [[str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
                 f"--dashboard-port={free_port()}", f"--temp-dir={root / 'tmp'}", *node_args()]]
    commands += [[str(BIN / "ray"), "start", f"--address={address}", *node_args()] for _ in range(nodes - 1)]

    def start(i: int, up) -> None:
        """Start node i; `ray start` gives a node 30 s (fixed) to register, which an overloaded machine can
        miss: a start that exits is retried twice."""
        for attempt in range(3):
            proc = subprocess.Popen(commands[i], stdout=open(logs[i], "ab"), stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=root)
            try:
                _wait_for(up, f"ray node {i}", 180, logs[i:i + 1], [proc])
                procs.append(proc)
                return
            except RuntimeError:
                if proc.poll() is None or attempt == 2:
                    procs.append(proc)
                    raise
                _stop([proc], grace_s=2)

    try:
        start(0, lambda: _accepts(port))
        ray.init(address=address, log_to_driver=False)
        for i in range(1, nodes):
            start(i, lambda: sum(n["Alive"] for n in ray.nodes()) > i)
        yield address
    finally:
        ray.shutdown()
        _stop(procs)


def ray_nodes_that_ran(root: Path, actor: str) -> set[str]:
    """Node ids whose worker processes hosted `actor` (from the session logs: each worker's `.out` names its
    actor, its core-worker log the node it started on). The state API would need Ray's dashboard."""
    logs = root / "tmp" / "session_latest" / "logs"
    nodes = set()
    for out in logs.glob("worker-*.out"):
        if f":actor_name:{actor}" not in out.read_text(errors="replace"):
            continue
        worker_id, pid = out.stem.split("-")[1], out.stem.split("-")[-1]
        core = logs / f"python-core-worker-{worker_id}_{pid}.log"
        if core.exists() and (m := re.search(r"node_id=([0-9a-f]+)", core.read_text(errors="replace"))):
            nodes.add(m.group(1))
    return nodes


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------------- Slurm

SLURM_DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue")


def slurm_missing() -> list[str]:
    return [d for d in SLURM_DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]


def _daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


SLURM_CONF = """\
ClusterName=tinyfoundry-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# containers: no delegated cgroups, so processes are tracked by parent pid and memory by polling /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, memory_mb: int = 8000) -> Iterator[dict[str, str]]:
    """munged + slurmctld + slurmd with a private config; yields the environment clients need (SLURM_CONF)."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, root=root, ctld_port=free_port(), slurmd_port=free_port(),
                                      user=os.environ.get("USER") or "root", cpus=cpus, memory_mb=memory_mb))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = root / "munge.key"
    procs: list[subprocess.Popen] = []
    logs = [root / "munged.log", root / "slurmctld.log", root / "slurmd.log"]
    try:
        subprocess.run([_daemon("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        procs.append(subprocess.Popen(
            [_daemon("munged"), "--foreground", "--force", f"--socket={root / 'munge.sock'}", f"--key-file={key}",
             f"--pid-file={root / 'munged.pid'}", f"--log-file={logs[0]}", f"--seed-file={root / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(lambda: (root / "munge.sock").exists(), "munged", 30, logs, procs)
        procs.append(subprocess.Popen([_daemon("slurmctld"), "-D", "-c", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen([_daemon("slurmd"), "-D", "-f", str(conf), "-N", host], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

        _wait_for(idle, "slurm node", 60, logs, procs)
        yield {"SLURM_CONF": str(conf)}
    finally:
        _stop(procs)


def missing(what: str) -> None:
    """A real component the test needs is absent: skip with the reason, but fail under CI (`CI=true`), where
    .ci/run installs it and its absence means the suite would silently stop testing it."""
    import pytest

    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


class Sleep:
    """A datatrove pipeline step that only waits (for time-limit tests; importable by Slurm tasks when
    tests/ is on their PYTHONPATH)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        time.sleep(self.seconds)
        return data
