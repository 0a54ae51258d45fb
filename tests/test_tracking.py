"""MLflow glue: nested stage runs under a pipeline run, and config keys MLflow would reject."""
from __future__ import annotations

import json

import mlflow

from tasks.tracking import log_finished_stage, mlflow_key, setup, stage_run


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


def test_stage_run_nests_under_the_parent_from_the_environment(tmp_path, mlflow_uri, monkeypatch):
    mlflow_ = setup("unit", root=tmp_path)
    parent = mlflow_.MlflowClient().create_run(mlflow_.get_experiment_by_name("unit").experiment_id).info.run_id
    monkeypatch.setenv("TINYFOUNDRY_PARENT_RUN_ID", parent)
    with stage_run("train", {"model": {"preset": "10m"}}, experiment="unit") as run:
        child = run.info.run_id
    assert mlflow_.MlflowClient().get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_stage_run_is_silent_off_rank_zero(mlflow_uri, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with stage_run("train", {}) as run:
        assert run is None


def test_mlflow_key_keeps_allowed_characters():
    assert mlflow_key("train.model/preset name:x-1") == "train.model/preset name:x-1"
    assert mlflow_key("languages.c++") == "languages.c__"
