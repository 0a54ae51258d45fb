"""The tinyfoundry Prefect flow: runs dvc.yaml's DAG, concurrently where it allows.

Each DVC stage becomes one Prefect task run (named after the stage, tagged with its family and
source). A task asks DVC whether its stage is up to date and skips it if so; otherwise it runs the
stage's `cmd` from dvc.yaml, streams its log lines into Prefect, and commits the result to
dvc.lock and the DVC cache. MLflow gets one parent run per flow run and a nested run per stage:
training and evaluation log theirs live from their own process; the others are logged here from
their metrics file, which spares each stage process the MLflow import. Large data only moves
through files: tasks return small dicts.

A flow run holds the project lock (tasks/lock.py; `flows run` takes it before Prefect starts) and hands it
to its stage processes. Holding it, it first closes what crashed runs of the project left open: Prefect
flow runs (flows/recovery.py) and MLflow runs (tasks/tracking.py) whose processes are gone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dag import StageNode, commit_stage, load_dag, remove_outs, reorder_lock, stage_changed
from flows.recovery import crash_abandoned_runs, mark_this_process, repair_dvc_rwlock
from flows.stage_log import StageLog
from tasks.config import ConfigError, load_config
from tasks.lock import ProjectBusy, held_descriptors, project_lock
from tasks.redact import redact
from tasks.report import metrics_file, stage_result
from tasks.stages import STAGES, metrics_path, section_name
from tasks.tracking import FLOW_ENV, PARENT_ENV, close_dead_runs, log_finished_stage, process_tags


class Tracking:
    """MLflow work of one flow run, kept off the stages' critical path: the parent run is created in the
    background while the first stages run, and finished stages are logged by one background thread."""

    def __init__(self, root: Path, cfg):
        self.cfg = cfg
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow")
        self.parent: Future = self.pool.submit(start_parent_run, root, cfg)
        self.pending: list[Future] = []

    def log_later(self, node: StageNode, root: Path) -> None:
        self.pending.append(self.pool.submit(lambda: log_stage_to_mlflow(node, root, self.cfg, self.parent.result())))

    def close(self) -> tuple[str | None, list[str]]:
        """Wait for the logging; a tracking failure is reported, not turned into a failed pipeline."""
        errors = []
        for fut in self.pending:
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")
        self.pool.shutdown()
        try:
            return self.parent.result(), errors
        except Exception as e:  # noqa: BLE001
            return None, [*errors, f"parent run: {type(e).__name__}: {e}"]


# Per flow run (task threads share the flow's process): its MLflow work, and the stage slots. Prefect's thread
# pool gives a thread to every submitted task even while it waits for its upstream futures, so the limit on
# running stages is a semaphore held only while a stage runs, not the pool's size.
_tracking: dict[str, Tracking] = {}
_slots: dict[str, threading.BoundedSemaphore] = {}


class StageFailed(RuntimeError):
    pass


def stage_env(parent_run_id: str | None, timing_file: Path) -> dict:
    env = dict(os.environ)
    # The stage's `python`/`torchrun` must be this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TINYFOUNDRY_TIMING_FILE"] = str(timing_file)
    env.setdefault("TQDM_MININTERVAL", "5")  # progress lines every few seconds, not per item, in the UI log
    env["PYTHONUNBUFFERED"] = "1"
    env[FLOW_ENV] = "1"
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    return env


@task(task_run_name="{node.name}", persist_result=False, cache_policy=NO_CACHE)
def run_dvc_stage(node: StageNode, root: str, flow_key: str, force: bool = False) -> dict:
    logger = get_run_logger()
    root_path = Path(root)
    spec = STAGES.get(node.family)  # None for a dvc.yaml stage that is not a `python -m tasks` stage
    with nullcontext() if spec and spec.io_bound else _slots[flow_key]:
        checked = time.time()
        changed = force or stage_changed(root_path, node.name)
        status_s = time.time() - checked
        if not changed:
            logger.info("%s is up to date (DVC status clean): skipped", node.name)
            return {"stage": node.name, "status": "skipped"}
        remove_outs(root_path, node)
        live = bool(spec and spec.live_tracking)
        parent = _tracking[flow_key].parent.result() if live else None
        timing_file = Path(tempfile.mkdtemp(prefix="tf-timing-")) / "timing.json"
        logger.info("running %s: %s", node.name, node.cmd)
        tail: deque[str] = deque(maxlen=30)

        def forward(line: str) -> None:
            logger.info("%s | %s", node.name, line)

        # the full output goes to the stage's log file; the Prefect log gets the readable part (flows/stage_log.py)
        stage_log = StageLog(stage_log_path(root_path, node.name), forward)
        # the stage inherits the project lock's descriptor: if this process dies, the lock stays held until it exits
        proc = subprocess.Popen(node.cmd, shell=True, cwd=root_path, env=stage_env(parent, timing_file),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                pass_fds=held_descriptors())
        for raw in proc.stdout:
            raw = redact(raw)  # what a stage prints outside logging (tracebacks, tools) is masked too
            tail.extend(line for line in raw.rstrip("\n").rsplit("\r", 1)[-1:] if line.strip())
            stage_log.feed(raw)
        rc = proc.wait()
        logger.info("%s | %s", node.name, stage_log.close())
        timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        shutil.rmtree(timing_file.parent, ignore_errors=True)
        if rc != 0:
            raise StageFailed(f"stage {node.name} failed with exit code {rc}; its last lines:\n" + "\n".join(tail))
        exited = time.time()
        commit_stage(root_path, node.name)
        commit_s = time.time() - exited
        if not timing.get("tracked", True):
            _tracking[flow_key].log_later(node, root_path)
        done = time.time()
        result = stage_result(node.family, _read_json(metrics_file(root_path, node.name)))
        logger.info("%s finished and committed to dvc.lock in %.1f s%s", node.name, done - checked,
                    f": {result}" if result else "")
        return {"stage": node.name, "status": "ran", "start": timing.get("start"), "end": timing.get("end"),
                "task_seconds": round(done - checked, 3), "dvc_status_seconds": round(status_s, 3),
                "dvc_commit_seconds": round(commit_s, 3), "process_exit": exited}


def stage_log_path(root: Path, stage: str) -> Path:
    """The stage's full log for this flow run: .tinyfoundry/logs/<flow run name>/<stage>.log."""
    return root / ".tinyfoundry" / "logs" / (flow_run.name or "flow") / f"{stage}.log"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def log_stage_to_mlflow(node: StageNode, root: Path, cfg, parent_run_id: str) -> None:
    metrics_file = root / metrics_path(node.family, node.source)
    stats = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    log_finished_stage(node.name, cfg.section(section_name(node.name)).model_dump(), stats, metrics_file,
                       parent_run_id, {"source": node.source or ""}, root)


def busy_seconds(results: list[dict]) -> float:
    """Length of the union of the intervals in which at least one stage function was running."""
    spans = sorted((r["start"], r["end"]) for r in results if r.get("start") and r.get("end"))
    total, cur_start, cur_end = 0.0, None, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            total += (cur_end - cur_start) if cur_end is not None else 0.0
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return total + ((cur_end - cur_start) if cur_end is not None else 0.0)


def start_parent_run(root: Path, cfg) -> str | None:
    """Create the MLflow parent run (and a new SQLite store, once) before any stage process touches MLflow,
    so they never race to initialise it. It stays open until the flow ends."""
    from tasks.tracking import setup

    mlflow = setup(cfg.tracking.experiment, cfg.tracking.tracking_uri, root)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    client = mlflow.MlflowClient()
    close_dead_runs(client, experiment.experiment_id, root)  # under the project lock: no other run is live
    run = client.create_run(experiment.experiment_id, run_name=f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"tinyfoundry.kind": "pipeline", **process_tags(root)})
    return run.info.run_id


def finish_parent_run(run_id: str | None, summary: dict, failed: bool) -> None:
    if not run_id:
        return
    from mlflow import MlflowClient

    from tasks.tracking import numeric

    client = MlflowClient()
    for key, value in numeric(summary).items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "stages_ran", ",".join(summary["ran"]) or "-")
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


REPORT_ARTIFACT = "tinyfoundry-run-report"


def publish_report(root: Path, summary: dict, model_name: str) -> dict | None:
    """The run report (tasks/report.py) on disk and in MLflow, and as a markdown artifact on this flow run."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.report import write_report

    logger = get_run_logger()
    try:
        report = write_report(root, {"name": summary["flow_run_name"], "model_name": model_name, **summary})
        markdown = Path(report["markdown"]).read_text()
        # the plots are files beside the report: name them instead of showing broken images
        markdown = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"_{m[1]}: {Path(report['markdown']).parent / m[2]}_",
                          markdown)
        mlflow_run = summary.get("mlflow_run_id") or "–"
        report["prefect_artifact"] = str(create_markdown_artifact(
            markdown=markdown, key=REPORT_ARTIFACT,
            description=f"tinyfoundry run report: stages, evaluation, candidates and champion (MLflow run {mlflow_run})"))
    except Exception as e:  # noqa: BLE001 -- the report must not fail a finished pipeline
        logger.warning("run report not written or not published: %s: %s", type(e).__name__, e)
        return None
    logger.info("run report: %s (and the %r artifact of this flow run)", report["html"], REPORT_ARTIFACT)
    return report


@flow(name="tinyfoundry", flow_run_name="pipeline-{started}", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=64))  # a thread per stage; `_slots` limits running ones
def pipeline(root: str = ".", force: bool = False, started: str = ""):
    """Run every stage of dvc.yaml that DVC reports out of date, in DAG order, independent ones concurrently.

    Holds the project lock: a manual run fails at once while another run writes; a served run waits for
    it or skips, as `flow.when_busy` says."""
    logger = get_run_logger()
    root_path = Path(root).resolve()
    cfg = load_config(root_path / "params.yaml")
    served = deployment.id is not None
    wait = served and cfg.flow.when_busy == "wait"
    try:
        with get_client(sync_client=True) as client:
            mark_this_process(client, flow_run.id)  # lets a later run tell whether this one still lives
    except Exception as e:  # noqa: BLE001 — bookkeeping; the run itself does not depend on it
        logger.warning("could not record this flow run's process in Prefect: %s", e)
    try:
        with project_lock(root_path, wait_s=cfg.flow.busy_wait_s if wait else 0.0):
            try:
                with get_client(sync_client=True) as client:
                    for name in crash_abandoned_runs(client, root_path, flow_run.id):
                        logger.warning("flow run %s of this project died without an end state: marked Crashed", name)
            except Exception as e:  # noqa: BLE001
                logger.warning("could not check for crashed flow runs of this project: %s", e)
            if repair_dvc_rwlock(root_path):
                logger.warning("a killed run had left DVC's lock file (.dvc/tmp/rwlock) corrupted: removed it")
            return run_pipeline(root_path, cfg, force)
    except ProjectBusy as e:
        if served and cfg.flow.when_busy == "skip":
            logger.warning("skipped (flow.when_busy: skip): %s", e)
            return Completed(name="Skipped", message=str(e))
        raise


def run_pipeline(root_path: Path, cfg, force: bool) -> dict:
    logger = get_run_logger()
    t0 = time.time()
    nodes = load_dag(root_path)
    if unknown := sorted(set(cfg.flow.retries) - {n.family for n in nodes}):  # a typo would mean no retries
        raise ConfigError(f"flow.retries names stage(s) {unknown} that dvc.yaml does not have; stages: "
                          f"{', '.join(sorted({n.family for n in nodes}))}")
    flow_key = str(flow_run.id)
    _tracking[flow_key] = Tracking(root_path, cfg)
    _slots[flow_key] = threading.BoundedSemaphore(cfg.flow.max_parallel_stages)
    logger.info("pipeline: %d DVC stages from dvc.yaml, up to %d at once (fetches besides)", len(nodes),
                cfg.flow.max_parallel_stages)

    futures = {}
    for node in nodes:
        retries = cfg.flow.retries.get(node.family, 0)
        task_ = run_dvc_stage.with_options(retries=retries, retry_delay_seconds=cfg.flow.retry_delay_s,
                                           tags=[node.family, *([node.source] if node.source else [])])
        futures[node.name] = task_.submit(node, str(root_path), flow_key, force,
                                          wait_for=[futures[u] for u in node.upstream])
    results, failed = [], []
    for name, fut in futures.items():
        try:
            results.append(fut.result())
        except Exception as e:  # noqa: BLE001 — report every failed stage, then fail the flow
            failed.append(name)
            logger.error("stage %s did not complete: %s", name, e)
    reorder_lock(root_path, [n.name for n in nodes])
    _slots.pop(flow_key)
    parent, tracking_errors = _tracking.pop(flow_key).close()
    for error in tracking_errors:
        logger.warning("MLflow logging failed (the stages' outputs are fine): %s", error)
    wall = time.time() - t0
    busy = busy_seconds(results)
    summary = {
        "wall_seconds": round(wall, 2),
        "stage_busy_seconds": round(busy, 2),
        "overhead_seconds": round(wall - busy, 2),
        "overhead_fraction": round((wall - busy) / wall, 4) if wall else 0.0,
        "ran": [r["stage"] for r in results if r["status"] == "ran"],
        "skipped": [r["stage"] for r in results if r["status"] == "skipped"],
        "failed": failed,
        "tracking_errors": tracking_errors,
        "stages": results,
    }
    finish_parent_run(parent, {k: summary[k] for k in ("wall_seconds", "stage_busy_seconds", "overhead_seconds",
                                                       "overhead_fraction")} | {"ran": summary["ran"]}, bool(failed))
    summary["mlflow_run_id"] = parent
    summary["prefect_flow_run_id"] = str(flow_run.id)
    summary["flow_run_name"] = flow_run.name
    summary["report"] = publish_report(root_path, summary, cfg.tracking.model_name)
    if failed:
        raise StageFailed(f"{len(failed)} stage(s) failed: {', '.join(failed)}")
    return summary
