"""MLflow glue: one parent run per pipeline run, one nested run per stage, rank 0 only.

The flow creates the parent run and hands its id to each stage process in TINYFOUNDRY_PARENT_RUN_ID;
a stage run outside the flow (plain `dvc repro`) becomes a top-level run of its own.
Stage code logs through `log_metrics`/`log_artifact`, which do nothing when no run is active.
Every run is tagged with its project and process (pid, host, start time); a run that starts while holding the
project lock first marks runs of the project whose process is gone KILLED (`close_dead_runs`).
"""
from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tasks.redact import redact

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


def process_tags(root: str | Path | None = None) -> dict[str, str]:
    """Who is writing this run: the project root and this process, so a later run can tell whether it died."""
    from tasks.lock import project_root, this_process

    me = this_process()
    return {"tinyfoundry.project": str(project_root(root)), "tinyfoundry.pid": str(me["pid"]),
            "tinyfoundry.host": me["host"], "tinyfoundry.pid_started": f"{me['started']:.2f}"}


def close_dead_runs(client, experiment_id: str, root: str | Path | None = None) -> list[str]:
    """Mark this project's RUNNING runs whose process is gone KILLED (called under the project lock).

    Runs from before process tags existed count as this project's only in its own SQLite store; runs whose
    process ran on another host are left alone (nothing here can tell whether they still run)."""
    from tasks.lock import process_alive, project_root

    root = str(project_root(root))
    local_store = client.tracking_uri == f"sqlite:///{Path(root) / 'mlflow.db'}"
    closed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        if "tinyfoundry.kind" not in tags or tags.get("tinyfoundry.project", root if local_store else None) != root:
            continue
        pid = tags.get("tinyfoundry.pid")
        alive = process_alive(pid, tags.get("tinyfoundry.pid_started"), tags.get("tinyfoundry.host")) if pid else False
        if alive is not False:
            continue
        client.set_tag(run.info.run_id, "tinyfoundry.closed", f"process {pid or '(not recorded)'} was gone; "
                                                             f"marked KILLED by pid {os.getpid()}")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed:
        logging.getLogger("tinyfoundry.tracking").info(
            "marked %d MLflow run(s) of this project KILLED: left RUNNING by processes that are gone", len(closed))
    return closed


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
    """MLflow params: every value as text, credentials masked (URIs with passwords, `HF_TOKEN=` in env_command)."""
    return {mlflow_key(k): redact(str(v))[:500] for k, v in flatten(d).items()}


class BackgroundRun:
    """One stage's MLflow run, driven by a single background thread: MLflow's import, the run's creation and
    every logging call happen there, in order, so the stage itself never waits on the tracking store."""

    def __init__(self, stage: str, params: dict, tags: dict, experiment: str, configured_uri: str | None):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-stage")
        self.run_id: str | None = None
        self.errors: list[str] = []
        self._call(self._start, stage, params, tags, experiment, configured_uri)

    def _start(self, stage, params, tags, experiment, configured_uri):
        mlflow = setup(experiment, configured_uri)
        from mlflow.entities import Metric, Param

        self._metric = Metric
        run_tags = {"stage": stage, "tinyfoundry.kind": "stage", **process_tags(), **tags}
        if os.environ.get(PARENT_ENV):
            run_tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        client = mlflow.MlflowClient()
        experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
        if not os.environ.get(FLOW_ENV):  # a stage run by `dvc repro`, holding the lock; a flow cleans up itself
            close_dead_runs(client, experiment_id)
        self.run_id = client.create_run(experiment_id, run_name=stage, tags=run_tags).info.run_id
        self.client = client
        params = param_strings(params)
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            chunk = dict(list(params.items())[start:start + 100])
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk.items()])

    def _call(self, fn, *args):
        def guarded():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 — tracking trouble must not kill a training run
                self.errors.append(f"{type(e).__name__}: {e}")
                logging.getLogger("tinyfoundry.tracking").warning("MLflow logging failed: %s", e)
        self.pool.submit(guarded)

    def log_metrics(self, metrics: dict, step: int | None) -> None:
        values = numeric(metrics)
        now = int(time.time() * 1000)
        self._call(lambda: self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, step or 0)
                                                                      for k, v in values.items()]))

    def set_tags(self, tags: dict) -> None:
        self._call(lambda: [self.client.set_tag(self.run_id, mlflow_key(k), str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None) -> None:
        def upload():
            if Path(path).is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            elif Path(path).exists():
                self.client.log_artifact(self.run_id, str(path), artifact_path)
        self._call(upload)

    def flush(self) -> None:
        self.pool.submit(lambda: None).result()

    @contextmanager
    def active(self) -> Iterator[Any]:
        """Make the run MLflow's active run in this thread (for registry work after the stage function)."""
        import mlflow

        self.flush()
        if self.run_id is None:
            yield None
            return
        with mlflow.start_run(run_id=self.run_id, nested=bool(os.environ.get(PARENT_ENV))) as run:
            yield run

    def close(self, failed: bool) -> None:
        self.flush()
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        self.pool.shutdown()


_current: BackgroundRun | None = None


@contextmanager
def stage_run(stage: str, params: dict, tags: dict | None = None, experiment: str = "tinyfoundry",
              configured_uri: str | None = None) -> Iterator[BackgroundRun | None]:
    """The stage's (nested) MLflow run, opened in the background; yields None off rank 0."""
    global _current
    if not is_rank_zero():
        yield None
        return
    _current = run = BackgroundRun(stage, params, tags or {}, experiment, configured_uri)
    failed = True
    try:
        yield run
        failed = False
    finally:
        _current = None
        run.close(failed)


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Queue metrics on the stage's run (returns at once); nothing happens off rank 0 or without a run."""
    if not is_rank_zero():
        return
    if _current is not None:
        _current.log_metrics(metrics, step)
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metrics(numeric(metrics), step=step)


def set_tags(tags: dict) -> None:
    """Queue tags on the stage's run (rank 0, a run active), e.g. the lineage of a training run's weights."""
    if not is_rank_zero():
        return
    if _current is not None:
        _current.set_tags(tags)
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tags({mlflow_key(k): str(v) for k, v in tags.items()})


def flush_current() -> None:
    """Wait until the stage's run has done what was queued, its start included (which sets MLflow's tracking URI)."""
    if _current is not None:
        _current.flush()


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not is_rank_zero():
        return
    if _current is not None:
        _current.log_artifact(path, artifact_path)
        return
    import mlflow

    if mlflow.active_run() is not None and Path(path).exists():
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)


def log_finished_stage(stage: str, params: dict, stats: dict, metrics_file: str | Path, parent_run_id: str,
                       tags: dict | None = None, root: str | Path | None = None) -> str:
    """Record a stage that already ran as a (nested) MLflow run: its params, numeric stats, metrics file."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_tags = {"stage": stage, "tinyfoundry.kind": "stage", "mlflow.parentRunId": parent_run_id, **process_tags(root),
                **(tags or {})}
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
