"""MLflow glue: one parent run per pipeline run, one nested run per stage, rank 0 only.

The flow creates the parent run and hands its id to each stage process in TINYFOUNDRY_PARENT_RUN_ID;
a stage run outside the flow (plain `dvc repro`) becomes a top-level run of its own.
Stage code logs through `log_metrics`/`log_artifact`, which do nothing when no run is active.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PARENT_ENV = "TINYFOUNDRY_PARENT_RUN_ID"
FLOW_ENV = "TINYFOUNDRY_FLOW_RUN"
"""Set by the flow for stage processes: stages without live tracking leave their MLflow run to the flow."""


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def tracking_uri(configured: str | None = None, root: str | Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    return f"sqlite:///{Path(root or Path.cwd()).resolve() / 'mlflow.db'}"


def setup(experiment: str, configured_uri: str | None = None, root: str | Path | None = None):
    """Point MLflow at the project's store and make sure the experiment exists (artifacts in mlartifacts/)."""
    import mlflow

    uri = tracking_uri(configured_uri, root)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        # A local store keeps artifacts in the project; a server decides for itself. The kind tag makes the
        # MLflow UI open the experiment on its training-runs page rather than the GenAI overview.
        artifacts = (Path(root or Path.cwd()).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        mlflow.create_experiment(experiment, artifact_location=artifacts,
                                 tags={"mlflow.experimentKind": "custom_model_development"})
    mlflow.set_experiment(experiment)
    return mlflow


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def mlflow_key(key: str) -> str:
    """MLflow names allow only alphanumerics, `_ - . / :` and spaces (a config key like `languages.c++` does not)."""
    return re.sub(r"[^\w\-. /:]", "_", key)


def numeric(d: dict) -> dict[str, float]:
    return {mlflow_key(k): float(v) for k, v in flatten(d).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def param_strings(d: dict) -> dict[str, str]:
    return {mlflow_key(k): str(v)[:500] for k, v in flatten(d).items()}


@contextmanager
def stage_run(stage: str, params: dict, tags: dict | None = None, experiment: str = "tinyfoundry",
              configured_uri: str | None = None) -> Iterator[Any]:
    """A nested MLflow run for one stage (or a top-level one without a parent). Yields None off rank 0."""
    if not is_rank_zero():
        yield None
        return
    mlflow = setup(experiment, configured_uri)
    parent = os.environ.get(PARENT_ENV)
    run_tags = {"stage": stage, "tinyfoundry.kind": "stage", **(tags or {})}
    if parent:
        run_tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_name=stage, tags=run_tags) as run:
        params = param_strings(params)
        if params:
            mlflow.log_params(params)
        yield run


def log_metrics(metrics: dict, step: int | None = None) -> None:
    if not is_rank_zero():
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metrics(numeric(metrics), step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not is_rank_zero():
        return
    import mlflow

    if mlflow.active_run() is not None and Path(path).exists():
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)


def log_finished_stage(stage: str, params: dict, stats: dict, metrics_file: str | Path, parent_run_id: str,
                       tags: dict | None = None) -> str:
    """Record a stage that already ran as a (nested) MLflow run: its params, numeric stats, metrics file."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_tags = {"stage": stage, "tinyfoundry.kind": "stage", "mlflow.parentRunId": parent_run_id, **(tags or {})}
    run = client.create_run(experiment_id, run_name=stage, tags=run_tags)
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(run_id,
                     metrics=[Metric(k, v, now, 0) for k, v in numeric(stats).items()],
                     params=[Param(k, v) for k, v in param_strings(params).items()])
    if Path(metrics_file).exists():
        client.log_artifact(run_id, str(metrics_file))
    client.set_terminated(run_id, "FINISHED")
    return run_id
