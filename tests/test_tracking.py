"""MLflow glue: nested stage runs under a pipeline run, and config keys MLflow would reject."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow

from tasks.tracking import log_finished_stage, log_metrics, mlflow_key, setup, stage_run


def test_finished_stage_is_logged_as_a_child_run_with_sanitised_keys(tmp_path, mlflow_uri):
    client = setup("unit", root=tmp_path) and mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("unit")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.create_run(experiment.experiment_id, run_name="pipeline").info.run_id
    metrics_file = tmp_path / "ingest_code.json"
    metrics_file.write_text(json.dumps({"docs_in": 10, "dropped": {"too long": 3}}))
    params = {"languages": {"c++": [".cc"], "python": [".py"]}, "max_file_bytes": 1000}

    run_id = log_finished_stage("ingest@code", params, json.loads(metrics_file.read_text()), metrics_file, parent)

    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["languages.c__"] == "['.cc']"
    assert run.data.metrics == {"docs_in": 10.0, "dropped.too long": 3.0}
    assert [a.path for a in client.list_artifacts(run_id)] == ["ingest_code.json"]


def test_stage_run_nests_under_the_parent_and_logs_queued_metrics_in_order(tmp_path, mlflow_uri, monkeypatch):
    mlflow_ = setup("unit", root=tmp_path)
    client = mlflow_.MlflowClient()
    parent = client.create_run(mlflow_.get_experiment_by_name("unit").experiment_id).info.run_id
    monkeypatch.setenv("TINYFOUNDRY_PARENT_RUN_ID", parent)
    with stage_run("train", {"model": {"preset": "10m"}}, experiment="unit") as run:
        for step in range(5):
            log_metrics({"loss": 10.0 - step}, step=step)  # queued; the stage does not wait for MLflow
        with run.active() as active:  # registry work after the stage function sees the run as active
            assert mlflow_.active_run().info.run_id == active.info.run_id
        child = run.run_id
    finished = client.get_run(child)
    assert finished.data.tags["mlflow.parentRunId"] == parent
    assert finished.data.params == {"model.preset": "10m"}
    assert finished.info.status == "FINISHED"
    history = client.get_metric_history(child, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 10.0 - s) for s in range(5)]


def test_stage_run_is_silent_off_rank_zero(mlflow_uri, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with stage_run("train", {}) as run:
        assert run is None


def test_mlflow_key_keeps_allowed_characters():
    assert mlflow_key("train.model/preset name:x-1") == "train.model/preset name:x-1"
    assert mlflow_key("languages.c++") == "languages.c__"


def test_runs_left_running_by_dead_processes_are_marked_killed(tmp_path, mlflow_uri, monkeypatch):
    """A SIGKILLed stage or flow leaves its run RUNNING; the next run of the project closes it, and only it."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    from tasks.tracking import close_dead_runs, process_tags

    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(project)
    client = setup("unit", root=project) and mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("unit").experiment_id
    code = textwrap.dedent("""
        import time
        from tasks.tracking import stage_run
        with stage_run("train", {"lr": 1}, experiment="unit") as run:
            run.flush()
            print(run.run_id, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=project, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    dead = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client.get_run(dead).info.status == "RUNNING"
    assert client.get_run(dead).data.tags["tinyfoundry.project"] == str(project.resolve())

    live = client.create_run(experiment, tags={"tinyfoundry.kind": "stage", **process_tags(project)}).info.run_id
    elsewhere = client.create_run(experiment, tags={"tinyfoundry.kind": "stage", **process_tags(project),
                                                    "tinyfoundry.project": "/another/project",
                                                    "tinyfoundry.pid": "999999999"}).info.run_id
    other_host = client.create_run(experiment, tags={"tinyfoundry.kind": "stage", **process_tags(project),
                                                     "tinyfoundry.host": "another-host",
                                                     "tinyfoundry.pid": "999999999"}).info.run_id
    legacy = client.create_run(experiment, tags={"tinyfoundry.kind": "pipeline"}).info.run_id  # made before tags
    not_ours = client.create_run(experiment).info.run_id

    assert close_dead_runs(client, experiment, project) == [dead]  # a shared server: older runs are not ours to close
    assert client.get_run(dead).info.status == "KILLED" and "was gone" in client.get_run(dead).data.tags["tinyfoundry.closed"]
    for run_id in (live, elsewhere, other_host, legacy, not_ours):
        assert client.get_run(run_id).info.status == "RUNNING"


def test_in_the_projects_own_store_untagged_running_runs_are_closed(tmp_path, monkeypatch):
    """Runs from before process tags: in the project's own SQLite store, under the lock, they can only be dead."""
    from tasks.tracking import close_dead_runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    client = setup("unit", root=tmp_path) and mlflow.MlflowClient()
    assert client.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    experiment = client.get_experiment_by_name("unit").experiment_id
    legacy = client.create_run(experiment, tags={"tinyfoundry.kind": "pipeline"}).info.run_id
    not_ours = client.create_run(experiment).info.run_id
    assert close_dead_runs(client, experiment, tmp_path) == [legacy]
    assert client.get_run(not_ours).info.status == "RUNNING"
