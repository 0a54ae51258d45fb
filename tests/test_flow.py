"""The Prefect flow runs dvc.yaml's DAG: concurrently, skipping up-to-date stages, retrying flaky ones,
and leaving dvc.lock exactly as `dvc repro` would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

# Two independent slow stages, a flaky one that fails on its first attempt, and a join.
DVC_YAML = textwrap.dedent("""
    stages:
      slow:
        foreach: [a, b]
        do:
          cmd: python stage.py slow_${item} out/${item}.txt
          deps: [stage.py]
          outs:
            - out/${item}.txt
      flaky:
        cmd: python stage.py flaky out/flaky.txt
        deps: [stage.py]
        outs: [out/flaky.txt]
      join:
        cmd: python stage.py join out/join.txt out/a.txt out/b.txt out/flaky.txt
        deps: [stage.py, out/a.txt, out/b.txt, out/flaky.txt]
        params: [mix.seed]
        outs: [out/join.txt]
""")

STAGE_PY = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    name, out, *ins = sys.argv[1:]
    log = Path("events.jsonl")
    marker = Path("flaky.failed-once")
    start = time.time()
    if name == "flaky" and not marker.exists():
        marker.write_text("x")
        sys.exit("flaky: simulated network failure")
    if name.startswith("slow") and Path("rendezvous").exists():
        # each slow stage waits (up to a minute) for the other to start: they overlap if and only if the flow
        # runs them side by side, however slow the machine is (a fixed sleep was flaky on a loaded CI machine)
        Path(f"{name}.started").touch()
        peer = Path("slow_b.started" if name == "slow_a" else "slow_a.started")
        deadline = time.time() + 60
        while not peer.exists() and time.time() < deadline:
            time.sleep(0.05)
    elif name.startswith("slow"):
        time.sleep(5)  # longer than Prefect's task start-up on a busy 2-core machine (~2 s)
    Path(out).parent.mkdir(exist_ok=True)
    Path(out).write_text(name + "".join(Path(i).read_text() for i in ins))
    with log.open("a") as f:
        f.write(json.dumps({"stage": name, "start": start, "end": time.time()}) + "\\n")
""")


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "dvc.yaml").write_text(DVC_YAML)
    (path / "stage.py").write_text(STAGE_PY)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["flow"]["retries"] = {"flaky": 2}
    params["flow"]["retry_delay_s"] = 0
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=path, check=True)
    return path


def run_flow(repo: Path, force: bool = False) -> dict:
    from flows.pipeline import pipeline

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        return pipeline(root=str(repo), force=force, started="test")
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A throwaway Prefect API and MLflow store for the flows in this module."""
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("stores")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    with prefect_test_harness(server_startup_timeout=120):
        yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.mark.slow
def test_flow_runs_the_dvc_dag_concurrently_with_retries_and_matches_dvc_repro(tmp_path, prefect_api):
    flowed = make_repo(tmp_path / "flow")
    (flowed / "rendezvous").touch()  # the slow stages wait for each other (STAGE_PY); `dvc repro` below does not
    summary = run_flow(flowed)
    assert sorted(summary["ran"]) == ["flaky", "join", "slow@a", "slow@b"]
    assert summary["failed"] == []

    events = {e["stage"]: e for e in map(json.loads, (flowed / "events.jsonl").read_text().splitlines())}
    a, b = events["slow_a"], events["slow_b"]
    assert a["start"] < b["end"] and b["start"] < a["end"], "independent stages must overlap in time"
    assert events["join"]["start"] >= max(a["end"], b["end"], events["flaky"]["end"])
    assert (flowed / "flaky.failed-once").exists(), "the flaky stage failed once and was retried"

    # The same project reproduced by DVC itself gives the same dvc.lock, byte for byte.
    reproduced = make_repo(tmp_path / "repro")
    (reproduced / "flaky.failed-once").write_text("x")
    subprocess.run([*DVC, "repro", "-q"], cwd=reproduced, check=True)
    assert (flowed / "dvc.lock").read_text() == (reproduced / "dvc.lock").read_text()

    status = subprocess.run([*DVC, "status", "--json"], cwd=flowed, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}
    dry = subprocess.run([*DVC, "repro", "--dry"], cwd=flowed, capture_output=True, text=True, check=True)
    assert "Running stage" not in dry.stdout

    # A second flow run skips everything; a param change reruns exactly the stage that reads it.
    again = run_flow(flowed)
    assert again["ran"] == [] and len(again["skipped"]) == 4
    params = yaml.safe_load((flowed / "params.yaml").read_text())
    params["mix"]["seed"] += 1
    (flowed / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run_flow(flowed)
    assert changed["ran"] == ["join"]


@pytest.mark.slow
def test_a_failing_stage_fails_the_flow_and_names_the_stage(tmp_path, prefect_api):
    from flows.pipeline import StageFailed

    repo = make_repo(tmp_path / "broken")
    (repo / "stage.py").write_text("import sys; sys.exit('boom: disk full')\n")
    with pytest.raises(StageFailed, match="slow@a|slow@b|flaky"):
        run_flow(repo)
    assert not (repo / "out" / "join.txt").exists()


@pytest.mark.slow
def test_fetches_run_beside_the_cpu_stages_without_taking_a_slot(tmp_path, prefect_api):
    """With one slot, the two CPU-bound stages take turns while the (io-bound) fetch runs beside one of them."""
    repo = make_repo(tmp_path / "slots")
    # the two slow stages beside a slow stage of the fetch family (io-bound)
    stages = yaml.safe_load(DVC_YAML)["stages"]
    fetch = {"foreach": ["web"], "do": {"cmd": "python stage.py slow_fetch out/fetch.txt", "deps": ["stage.py"],
                                        "outs": ["out/fetch.txt"]}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": stages["slow"], "fetch": fetch}}))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["flow"] |= {"max_parallel_stages": 1, "retries": {"fetch": 0}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    summary = run_flow(repo)
    assert sorted(summary["ran"]) == ["fetch@web", "slow@a", "slow@b"]

    events = {e["stage"]: e for e in map(json.loads, (repo / "events.jsonl").read_text().splitlines())}
    a, b, fetch = events["slow_a"], events["slow_b"], events["slow_fetch"]
    assert a["end"] <= b["start"] or b["end"] <= a["start"], "one slot: the CPU-bound stages must take turns"
    assert any(s["start"] < fetch["end"] and fetch["start"] < s["end"] for s in (a, b)), \
        "the fetch must run beside a CPU-bound stage, not wait for a slot"


def test_the_served_deployment_runs_this_project_on_the_cron_from_params(tmp_path):
    from flows.__main__ import build_deployment

    repo = make_repo(tmp_path / "served")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["flow"]["schedule_cron"] = "15 4 * * 1"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    deployment = build_deployment(repo)
    assert deployment.name == params["flow"]["name"]
    assert [s.schedule.cron for s in deployment.schedules] == ["15 4 * * 1"]
    assert deployment.parameters == {"root": str(repo)}
    assert deployment.entrypoint.endswith("flows/pipeline.py:pipeline")


def test_retries_for_a_stage_dvc_yaml_lacks_fail_before_any_stage(tmp_path, prefect_api):
    from tasks.config import ConfigError

    repo = make_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["flow"]["retries"] = {"flakey": 2}  # a typo would silently mean no retries
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"flow.retries names stage\(s\) \['flakey'\] that dvc.yaml does not have"):
        run_flow(repo)
    assert not (repo / "out").exists() and not (repo / "events.jsonl").exists()


def test_flow_runs_of_the_project_left_running_by_dead_processes_are_marked_crashed(tmp_path, prefect_api):
    import socket

    from prefect import flow as prefect_flow
    from prefect import get_client
    from prefect import task as prefect_task
    from prefect.states import Pending, Running

    from flows.recovery import crash_abandoned_runs, process_marker

    @prefect_flow(name="recovery-test")
    def some_flow(root: str):
        pass

    @prefect_task
    def some_task():
        pass

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:{time.time() - 60:.2f}"
    root = tmp_path.resolve()
    with get_client(sync_client=True) as client:
        def running(project: Path, marker: str | None):
            run = client.create_flow_run(some_flow, parameters={"root": str(project)}, state=Running())
            if marker:
                client.update_flow_run(run.id, infrastructure_pid=marker)
            return run

        killed = running(root, dead)
        was_running = client.create_task_run(some_task, killed.id, "a", state=Running())
        never_started = client.create_task_run(some_task, killed.id, "b", state=Pending())
        live = running(root, process_marker())          # e.g. a served run waiting for the lock
        starting = running(root, None)                  # has not recorded its process yet
        other_project = running(root / "other", dead)
        other_host = running(root, f"another-host:{gone.pid}:0")
        current = running(root, process_marker())

        assert crash_abandoned_runs(client, root, current.id) == [killed.name]
        state = lambda run: client.read_flow_run(run.id).state  # noqa: E731
        assert state(killed).type.value == "CRASHED" and "is gone" in state(killed).message
        assert client.read_task_run(was_running.id).state.type.value == "CRASHED"
        assert client.read_task_run(never_started.id).state.type.value == "CANCELLED"
        for run in (live, starting, other_project, other_host, current):
            assert state(run).type.value == "RUNNING", run.name


def test_a_served_run_skips_or_waits_while_the_project_is_busy_and_a_manual_run_fails(tmp_path, prefect_api,
                                                                                      monkeypatch):
    from uuid import uuid4

    from tasks.lock import ProjectBusy
    from tests.test_project_lock import hold

    repo = make_repo(tmp_path / "busy")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["flow"].update(when_busy="skip", busy_wait_s=1.0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    holder, _ = hold(repo)
    try:
        monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", str(uuid4()))  # as when `flows serve` runs it
        state = pipeline_state(repo)
        assert state.type.value == "COMPLETED" and state.name == "Skipped" and f"pid {holder.pid}" in state.message
        params["flow"]["when_busy"] = "wait"
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        started = time.monotonic()
        state = pipeline_state(repo)
        assert state.type.value == "FAILED" and time.monotonic() - started >= 1.0  # waited busy_wait_s, then gave up
        monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID")
        with pytest.raises(ProjectBusy, match=f"pid {holder.pid}"):
            run_flow(repo)
        assert not (repo / "out").exists()
    finally:
        holder.kill()
        holder.wait()


def pipeline_state(repo: Path):
    from flows.pipeline import pipeline

    return pipeline(root=str(repo), started="served", return_state=True)
