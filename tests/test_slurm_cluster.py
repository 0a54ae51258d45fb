"""Slurm for real: a single-node cluster from Debian's packages (munged, slurmctld, slurmd; tests/clusters.py)
runs ingest through datatrove's Slurm executor, a task killed for memory or at its time limit fails the stage
naming its log, and infra/slurm/train.sbatch trains the tiny profile and records what it trained with in
dvc.lock. Under CI=true a missing Slurm fails these tests (.ci/run installs it)."""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from clusters import BIN, Sleep, missing, slurm_cluster, slurm_missing
from project_copy import make_project_copy
from tasks.config import load_config
from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import BooksIngestConfig
from train_helpers import book_shards, byte_tokenizer_dir

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BOOKS = ["pg11.txt.gz", "pg35.txt.gz", "pg17997.txt.gz"]


def slurm_settings(root: Path, **extra) -> dict:
    # tasks run this venv's `launch_pickled_pipeline`; tests/ on PYTHONPATH lets them unpickle clusters.Sleep
    return {"logging_dir": str(root / "slurm-logs"), "poll_s": 1.0, "mem_per_cpu_gb": 1.0,
            "env_command": f"export PATH={BIN}:$PATH PYTHONPATH={TESTS}:${{PYTHONPATH:-}}", **extra}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node cluster (4 logical CPUs on this 2-core machine), SLURM_CONF set for this module."""
    if absent := slurm_missing():
        missing(f"Slurm is not installed ({', '.join(absent)} missing); Debian: apt-get install slurmctld slurmd "
                "slurm-client munge (.ci/run does)")
    if os.geteuid() != 0:
        missing("slurmd must run as root to start jobs as their user; run the tests as root (CI does)")

    root = tmp_path_factory.mktemp("slurm")
    with slurm_cluster(root / "cluster", cpus=4) as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield root


@pytest.fixture(scope="module")
def timed_out(slurm):
    """A stage started in the background whose only task sleeps past its 1-minute time limit: Slurm's smallest
    limit, so the tests that ask for it run while Slurm gets round to killing it (~60–90 s)."""
    from tasks.executor import run_executor

    limited = ExecutorConfig(kind="slurm", tasks=1, workers=1, slurm=slurm_settings(slurm, time="00:01:00"))
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(run_executor, limited, [Sleep(600)], slurm / "sleeper-logs", "sleeper")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.needs_shared_data
def test_ingest_through_slurm_matches_local(slurm, shared_data, tmp_path):
    from tasks.ingest import run_ingest

    root = slurm
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in BOOKS:
        os.symlink(shared_data / "books" / name, raw / name)
    on_slurm = ExecutorConfig(kind="slurm", tasks=2, workers=2, slurm=slurm_settings(root))
    local = run_ingest(BooksIngestConfig(executor=ExecutorConfig(tasks=2, workers=1)), {"raw": raw}, tmp_path / "local")
    remote = run_ingest(BooksIngestConfig(executor=on_slurm), {"raw": raw}, tmp_path / "slurm")
    assert local == remote and local["docs_out"] == len(BOOKS)
    assert _tree(tmp_path / "local") == _tree(tmp_path / "slurm")
    # the array ran as Slurm jobs (their logs are Slurm's), and datatrove's per-task stats were merged
    assert len(list((root / "slurm-logs").glob("*_[01].out"))) >= 2
    logs = tmp_path / ".slurm.logs"
    assert json.loads((logs / "stats.json").read_text()) and not (tmp_path / ".slurm.partial").exists()


@pytest.mark.needs_shared_data
def test_a_task_killed_for_memory_fails_the_stage_naming_its_log(slurm, shared_data, tmp_path):
    from tasks.ingest import run_ingest
    from tasks.slurm import SlurmTaskFailed

    root = slurm
    tiny_memory = ExecutorConfig(kind="slurm", tasks=1, workers=1, slurm=slurm_settings(root, mem_per_cpu_gb=0.03))
    with pytest.raises(SlurmTaskFailed, match=r"ended FAILED \(killed for exceeding its memory\); its log: \S+_0\.out"):
        run_ingest(BooksIngestConfig(executor=tiny_memory), {"raw": shared_data / "books" / BOOKS[0]}, tmp_path / "o")
    queue = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING"], capture_output=True, text=True).stdout
    assert "ingest-b" not in queue  # nothing of the failed stage left queued


@pytest.mark.slow
@pytest.mark.extended
def test_train_sbatch_trains_the_tiny_profile_and_locks_its_params(slurm, timed_out, shared_data, tmp_path):
    # asks for `timed_out` only to start the sleeper early: it waits out its time limit while this job trains
    project = make_project_copy(tmp_path / "project")
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())  # as committed, comments included
    book_shards(project / "data" / "shards", shared_data, max_chars=60_000)
    byte_tokenizer_dir(project / "data" / "tokenizer")  # what the byte-level shards were cut with (registry export)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "GPUS_PER_NODE": "1", "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    # this machine: one node, no GPUs, 2 cores, shared with the sleeper (command-line options override the
    # script's #SBATCH lines)
    res = subprocess.run(["sbatch", "--wait", "--parsable", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2",
                          "--mem=2G", "--oversubscribe", "--time=10", "infra/slurm/train.sbatch", "profiles/tiny.yaml"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=600)
    job = res.stdout.strip().split(";")[0]
    log = project / "logs" / "slurm" / f"tinyfoundry-train-{job}.out"
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert res.returncode == 0, f"{res.stderr}\n{info}\n{log.read_text()[-3000:] if log.exists() else 'no log'}"

    expected = load_config(ROOT / "params.yaml", ROOT / "profiles" / "tiny.yaml").train
    meta = json.loads((project / "data" / "model" / "meta.json").read_text())
    assert meta["step"] == expected.max_steps == 20 and meta["params"] == json.loads(expected.model_dump_json())
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["params"]["params.yaml"]["train"]
    for key, value in locked.items():  # dvc.lock holds what the job trained with, not params.yaml's old values
        assert value == meta["params"][key], key
    assert locked["max_steps"] == 20 and locked["model"]["overrides"]["d_model"] == 64
    params_text = (project / "params.yaml").read_text()
    assert "# CPU demo profile" in params_text and load_config(project / "params.yaml").train == expected


@pytest.mark.slow
@pytest.mark.extended  # Slurm's smallest time limit is a minute: ~80 s of waiting, too long for make test
def test_a_task_past_its_time_limit_fails_the_stage_naming_its_log(timed_out):
    from tasks.slurm import SlurmTaskFailed

    with pytest.raises(SlurmTaskFailed, match=r"ended TIMEOUT \(killed at its time limit\); its log: \S+_0\.out"):
        timed_out.result(timeout=300)
