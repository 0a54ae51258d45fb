"""The whole pipeline on the tiny profile, through the Prefect flow, on the real shared data:
afterwards DVC is clean, MLflow holds the parent run, a child run per stage and a `champion`
model version, and Prefect lists the flow run as Completed with a task run per stage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.project_copy import make_project_copy

DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, shared_data):
    project = make_project_copy(tmp_path_factory.mktemp("tiny") / "project", "profiles/tiny.yaml", shared_data)
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect"),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{project / '.prefect' / 'prefect.db'}"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return project, env, proc.stdout


@pytest.mark.slow
def test_every_stage_ran_and_dvc_is_clean_afterwards(pipeline_run):
    project, env, stdout = pipeline_run
    runs = sorted((project / ".tinyfoundry" / "runs").glob("*.json"))
    summary = json.loads(runs[-1].read_text())
    assert summary["failed"] == [] and len(summary["ran"]) == 14
    assert 0 <= summary["overhead_fraction"] < 1
    for name in ("ingest_web", "ingest_books", "ingest_code", "dedup", "filter", "tokenizer", "mix", "shard",
                 "train", "eval"):
        assert (project / "metrics" / f"{name}.json").exists(), name
    status = subprocess.run([*DVC, "status", "--json"], cwd=project, env=env, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}, status.stdout
    dry = subprocess.run([*DVC, "repro", "--dry"], cwd=project, env=env, capture_output=True, text=True)
    assert "Running stage" not in dry.stdout, dry.stdout
    assert "pipeline finished" in stdout


@pytest.mark.slow
def test_mlflow_has_parent_child_runs_and_a_champion(pipeline_run):
    project, env, _ = pipeline_run
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tinyfoundry")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tinyfoundry.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert {"fetch@web", "ingest@web", "dedup", "filter", "tokenizer", "mix", "shard", "train", "evaluate"} <= children
    assert len(children) == 14
    champion = client.get_model_version_by_alias("tinyfoundry-llama", "champion")
    assert int(champion.version) >= 1


@pytest.mark.slow
def test_prefect_lists_the_completed_flow_run_with_a_task_run_per_stage(pipeline_run):
    project, env, _ = pipeline_run
    script = textwrap.dedent("""
        import asyncio, json
        from prefect.client.orchestration import get_client
        async def main():
            async with get_client() as client:
                flows = await client.read_flow_runs()
                tasks = await client.read_task_runs()
                print(json.dumps({"flows": [(f.name, f.state_type.value) for f in flows],
                                  "tasks": sorted({t.name for t in tasks if t.state_type.value == "COMPLETED"})}))
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [state for _, state in seen["flows"]] == ["COMPLETED"]
    assert {"fetch@web", "fetch@eval", "ingest@code", "dedup", "filter", "train", "evaluate"} <= set(seen["tasks"])
    assert len(seen["tasks"]) == 14
