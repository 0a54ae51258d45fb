"""MLflow glue: nested stage runs under a pipeline run, and config keys MLflow would reject."""
from __future__ import annotations

import json

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
