"""Reliability on the tiny profile: crashes, reruns, code changes and concurrent runs.

One project copy runs `python -m flows run` over and over; each run is SIGKILLed, whole process tree at once,
in the middle of the next stage, until a last run completes. The outputs must equal those of the uninterrupted
run (the shared `tiny_pipeline` fixture), no MLflow or Prefect run may be left running, and while a run holds
the project another one is refused. Then a code edit must retrain from step 0. The runs report to the Prefect
and MLflow servers of `tiny_pipeline` (as with `make ui`): they outlive the killed runs, and no run pays for
starting Prefect's temporary server.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.project_copy import PROJECT_ROOT, client_env, make_project_copy
from tests.test_pipeline_e2e import api

pytestmark = [pytest.mark.slow, pytest.mark.extended]

# Stage families in DAG order, each with a path whose appearance means the stage is in the middle of its work.
KILL_POINTS = [
    ("fetch", "data/raw/.*.partial"),
    ("ingest", "data/ingest/.*.partial/logs"),
    ("dedup", "data/.dedup.partial"),
    ("filter", "data/.filter.partial/work/kept_heuristics"),  # heuristics done: the rerun resumes from there
    ("decontaminate", "data/.decontam.partial"),
    ("tokenizer", "data/.tokenizer.partial"),
    ("mix", "data/.mix.partial"),
    ("shard", "data/.shards.partial"),
    ("train", "checkpoints/*/step_000010"),  # a checkpoint saved: the rerun resumes from it
    ("evaluate", "data/.eval.partial"),
]


def flow_run(project: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows", "run"], cwd=project, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def freeze(proc: subprocess.Popen) -> list[psutil.Process]:
    """SIGSTOP the run's whole process group at once, then list its tree (stable now that it is frozen)."""
    os.killpg(proc.pid, signal.SIGSTOP)
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def kill(proc: subprocess.Popen, tree: list[psutil.Process]) -> None:
    """SIGKILL every process of the tree, also those in process groups of their own (torchrun's workers)."""
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=60)
    proc.wait()


def command_lines(tree: list[psutil.Process]) -> list[str]:
    lines = []
    for p in tree:
        try:
            lines.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return lines


def differing_files(project: Path, reference: Path) -> list[str]:
    """For the failure message: data files that differ between the two projects."""
    outs = [Path(o) for o in data_outs(reference)]  # not the datatrove logs beside them (they hold timings)
    files = {p.relative_to(root) for root in (project, reference) for out in outs for p in (root / out).rglob("*")
             if p.is_file()}
    return sorted(str(f) for f in files if not ((project / f).is_file() and (reference / f).is_file()
                                                 and (project / f).read_bytes() == (reference / f).read_bytes()))


def data_outs(project: Path) -> dict[str, str]:
    """md5 of every data output in dvc.lock (metrics files hold timings, so they are left out)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])
            if o["path"].startswith("data/")}


@pytest.fixture(scope="module")
def crashed_and_rerun(tmp_path_factory, shared_data, tiny_pipeline, tiny_overrides):
    """The kill sequence: one flow run per stage family, killed mid-stage; then a run to the end."""
    urls, env = tiny_pipeline[1], tiny_pipeline[2]
    project = make_project_copy(tmp_path_factory.mktemp("crash") / "project", "profiles/tiny.yaml", shared_data,
                                tiny_overrides)
    logs = PROJECT_ROOT / "test-artifacts" / "reliability"  # each run's log, kept after the test (gitignored)
    logs.mkdir(parents=True, exist_ok=True)
    kills, refusals = [], {}
    for family, trigger in KILL_POINTS:
        proc = flow_run(project, env, logs / f"killed-in-{family}.log")
        deadline = time.monotonic() + 900
        while not glob.glob(str(project / trigger)):
            assert proc.poll() is None, f"the run ended before {family} could be killed: {(logs / f'killed-in-{family}.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{family} did not reach {trigger}"
            time.sleep(0.005)
        tree = freeze(proc)
        if family == "train":  # the frozen run still holds the project: a second run must be refused
            refusals = concurrent_attempts(project, env)
        kills.append((family, command_lines(tree)))
        kill(proc, tree)
    final = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=1200)
    (logs / "final.log").write_text(final.stdout + final.stderr)
    assert final.returncode == 0, final.stderr[-3000:]
    return project, kills, refusals, urls, env


def concurrent_attempts(project: Path, env: dict) -> dict:
    """A second `flows run`, and a stage command as `dvc repro` runs it, while the frozen run holds the lock."""
    holder = json.loads((project / ".tinyfoundry" / "lock.json").read_text())
    shards_before = sorted(p.name for p in (project / "data" / "shards").iterdir())
    started = time.monotonic()
    flows = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)
    flows_s = time.monotonic() - started
    stage = subprocess.run([sys.executable, "-m", "tasks", "shard", "--in", "docs=data/mix", "--in",
                            "tokenizer=data/tokenizer", "--out", "data/shards"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)
    return {"holder": holder, "flows": flows, "flows_s": flows_s, "stage": stage,
            "shards_untouched": sorted(p.name for p in (project / "data" / "shards").iterdir()) == shards_before}


def test_sigkill_in_each_stage_then_a_rerun_gives_the_uninterrupted_outputs(crashed_and_rerun, tiny_pipeline):
    project, kills = crashed_and_rerun[:2]
    reference = tiny_pipeline[0]
    for family, commands in kills:  # each kill hit its stage while it ran
        assert any(f"-m tasks {family}" in c for c in commands), (family, commands)
    outs = data_outs(project)
    assert len(outs) == 16 and outs == data_outs(reference), differing_files(project, reference)
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project, env=client_env(),
                            capture_output=True, text=True)
    assert json.loads(status.stdout) == {}
    # the resumable stages resumed their partial work instead of redoing it
    train = json.loads((project / "metrics" / "train.json").read_text())
    # killed once its step-10 checkpoint appeared; on a loaded machine the trainer can save step 20 before the
    # freeze lands: either way the rerun resumes instead of starting over
    assert train["resumed_from_step"] in (10, 20) and train["step"] == 20
    after_filter = [family for family, _ in KILL_POINTS][[family for family, _ in KILL_POINTS].index("filter") + 1]
    assert "filter: resuming the partial output in" in (PROJECT_ROOT / "test-artifacts" / "reliability" /
                                                        f"killed-in-{after_filter}.log").read_text()


def test_a_concurrent_run_is_refused_at_once_naming_the_holder(crashed_and_rerun):
    refusals = crashed_and_rerun[2]
    holder = refusals["holder"]
    assert holder["command"].endswith("-m flows run")
    for attempt in (refusals["flows"], refusals["stage"]):
        assert attempt.returncode == 3, attempt.stderr[-2000:]
        assert f"in use by another run: pid {holder['pid']}" in attempt.stderr and "-m flows run" in attempt.stderr
    assert refusals["flows_s"] < 30  # refused before Prefect or any stage starts
    assert refusals["shards_untouched"]


def test_no_run_is_left_running_after_crashes_and_a_rerun(crashed_and_rerun):
    import mlflow

    project, kills, _, urls, _ = crashed_and_rerun
    client = mlflow.MlflowClient(urls.mlflow)
    experiment = client.get_experiment_by_name("tinyfoundry").experiment_id
    runs = client.search_runs([experiment], f"tags.`tinyfoundry.project` = '{project}'", max_results=1000)
    statuses = [r.info.status for r in runs]
    killed_parents = [r for r in runs if r.info.status == "KILLED" and r.data.tags["tinyfoundry.kind"] == "pipeline"]
    assert "RUNNING" not in statuses and statuses.count("KILLED") >= len(kills) - 1, statuses
    assert len(killed_parents) >= len(kills) - 1  # the parent run may not exist yet when fetch is killed

    flows = [f for f in api(f"{urls.prefect_api}/flow_runs/filter", {"limit": 200})
             if f["parameters"].get("root") == str(project)]
    assert sorted(f["state_type"] for f in flows) == ["COMPLETED"] + ["CRASHED"] * len(kills)
    tasks = api(f"{urls.prefect_api}/task_runs/filter",
                {"flow_runs": {"id": {"any_": [f["id"] for f in flows]}}, "limit": 200})
    states = [t["state_type"] for t in tasks]
    assert not {"RUNNING", "PENDING"} & set(states) and states.count("CRASHED") >= len(kills), states


def test_a_code_change_retrains_from_step_0(crashed_and_rerun):
    project = crashed_and_rerun[0]
    with open(project / "models" / "llama.py", "a") as f:
        f.write("\n# an edit to the model code\n")
    env = {**crashed_and_rerun[4], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # torchrun
    res = subprocess.run([sys.executable, "-m", "dvc", "repro", "train"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    train = json.loads((project / "metrics" / "train.json").read_text())
    assert train["resumed_from_step"] == 0 and train["step"] == 20
    assert "starting from step 0" in res.stdout + res.stderr and "code changed (models/llama.py)" in res.stdout + res.stderr
    assert len([p for p in (project / "checkpoints").iterdir() if p.is_dir()]) == 2  # the old run's stay, apart
