"""End to end: the tiny profile runs every real stage through the flow against a local Prefect server and MLflow
server (flows/servers.py); the run must leave DVC clean and Prefect and MLflow consistent. Then (extended tier) headless Debian Chromium -- driven by Playwright, which needs no browser
download with `executable_path` -- checks that the Prefect UI lists the completed flow run with its task runs and
stage logs, and that the MLflow UI shows the experiment, the stage runs and the `champion` model.
Screenshots go to test-artifacts/ui-browser/ (gitignored). The tiny run itself is the session fixture
`tiny_pipeline` (tests/conftest.py), shared with the reliability suite as its uninterrupted reference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.project_copy import PROJECT_ROOT, client_env
from tests.real_components import require_binary, require_module

pytestmark = pytest.mark.slow

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "ui-browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium (installed with apt-get when missing and root) driven by Playwright; skipped with the
    reason when either is missing, failed under CI=true (tests/real_components.py)."""
    sync_api = require_module("playwright.sync_api", "pip install playwright (test extra)")
    executable = require_binary("chromium", apt_package="chromium", paths=("/usr/bin/chromium",), install=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def api(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def dvc_stage_names(project: Path) -> list[str]:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    names = []
    for name, spec in stages.items():
        names += [f"{name}@{item}" for item in spec["foreach"]] if "foreach" in spec else [name]
    return names


def check_prefect_ui(page, urls, flow_run: dict, task_runs: list[dict], shot_prefix: str) -> None:
    expect = __import__("playwright.sync_api", fromlist=["expect"]).expect
    page.goto(f"{urls.prefect_ui}/runs/flow-run/{flow_run['id']}")
    expect(page.get_by_text(flow_run["name"]).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Completed").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}prefect-flow-run.png"), full_page=True)
    page.get_by_text("Task Runs", exact=True).first.click()
    for tr in task_runs:
        expect(page.get_by_text(tr["name"], exact=True).first).to_be_attached(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}prefect-task-runs.png"), full_page=True)
    # one stage's own page shows that stage's log lines
    last = task_runs[-1]
    page.goto(f"{urls.prefect_ui}/runs/task-run/{last['id']}")
    expect(page.get_by_text(last["name"]).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(last["_log_line"]).first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}prefect-task-run-logs.png"), full_page=True)


def check_mlflow_ui(page, urls, experiment_id: str, parent_name: str, stage_names: list[str], model: str,
                    shot_prefix: str) -> None:
    expect = __import__("playwright.sync_api", fromlist=["expect"]).expect
    page.goto(f"{urls.mlflow}/#/experiments/{experiment_id}/runs")
    row = page.locator("[role=row]", has_text=parent_name).first
    expect(row).to_be_visible(timeout=60_000)
    row.locator("button").first.click()  # the expander that shows the nested stage runs
    for name in stage_names:
        expect(page.get_by_role("link", name=name, exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}mlflow-runs.png"), full_page=True)
    page.goto(f"{urls.mlflow}/#/models/{model}")
    expect(page.get_by_text("champion").first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}mlflow-model.png"), full_page=True)


def prefect_runs(urls, flow_run_name: str | None = None) -> tuple[dict, list[dict]]:
    flow_runs = api(f"{urls.prefect_api}/flow_runs/filter",
                    {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "sort": "START_TIME_DESC"})
    flow_runs = [f for f in flow_runs if flow_run_name in (None, f["name"])]
    assert flow_runs, "Prefect server has no completed flow run"
    flow_run = flow_runs[0]
    task_runs = api(f"{urls.prefect_api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    for tr in task_runs:
        logs = api(f"{urls.prefect_api}/logs/filter", {"logs": {"task_run_id": {"any_": [tr["id"]]}}, "limit": 5})
        assert logs, f"task run {tr['name']} has no log lines on the server"
        tr["_log_line"] = logs[0]["message"][:60]
    return flow_run, sorted(task_runs, key=lambda t: t["name"])


@pytest.mark.extended
def test_ui_shows_a_pipeline_shaped_run(browser, tmp_path):
    """Fast path (no pipeline): a flow with stage-named tasks and nested MLflow runs + a champion alias."""
    from flows.servers import running_servers

    code = textwrap.dedent('''
        import json, mlflow
        from prefect import flow, task, get_run_logger
        from prefect.runtime import flow_run
        @task(task_run_name="{name}", tags=["tinyfoundry"])
        def stage(name):
            get_run_logger().info("%s | stage output line", name)
        @flow(name="tinyfoundry", flow_run_name="pipeline-synthetic")
        def pipeline():
            for n in ["ingest@web", "dedup", "train"]:
                stage(n)
            return str(flow_run.id)
        fid = pipeline()
        mlflow.set_experiment("tinyfoundry")
        with mlflow.start_run(run_name="pipeline-synthetic") as p:
            for n in ["ingest@web", "dedup", "train"]:
                with mlflow.start_run(run_name=n, nested=True):
                    mlflow.log_metric("seconds", 1.0)
            mlflow.log_text("weights", "model/weights.txt")
        c = mlflow.MlflowClient()
        c.create_registered_model("tinyfoundry-llama")
        v = c.create_model_version("tinyfoundry-llama", p.info.artifact_uri + "/model", run_id=p.info.run_id)
        c.set_registered_model_alias("tinyfoundry-llama", "champion", v.version)
        print(json.dumps({"flow_run": fid, "experiment": p.info.experiment_id}))
    ''')
    with running_servers(tmp_path, 0, 0) as urls:
        res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=client_env(urls),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        ids = json.loads(res.stdout.strip().splitlines()[-1])
        flow_run, task_runs = prefect_runs(urls, "pipeline-synthetic")
        assert flow_run["id"] == ids["flow_run"]
        assert [t["name"] for t in task_runs] == ["dedup", "ingest@web", "train"]
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        check_prefect_ui(page, urls, flow_run, task_runs, "synthetic-")
        check_mlflow_ui(page, urls, ids["experiment"], "pipeline-synthetic", ["ingest@web", "dedup", "train"],
                        "tinyfoundry-llama", "synthetic-")
        page.close()


def test_tiny_pipeline_runs_every_stage_and_leaves_dvc_prefect_and_mlflow_consistent(tiny_pipeline):
    """The acceptance checks of a pipeline run, without a browser."""
    import mlflow

    project, urls, env, record, stdout = tiny_pipeline
    stages = dvc_stage_names(project)
    assert record["failed"] == [] and sorted(record["ran"]) == sorted(stages) and len(stages) == 16
    assert 0 <= record["overhead_fraction"] < 1 and record["tracking_errors"] == []
    assert "pipeline finished" in stdout

    # DVC: nothing left to do, exactly as after `dvc repro`
    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run([*dvc, "status", "--json"], cwd=project, env=env, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}, status.stdout
    dry = subprocess.run([*dvc, "repro", "--dry"], cwd=project, env=env, capture_output=True, text=True)
    assert "Running stage" not in dry.stdout, dry.stdout

    # Prefect: the flow run Completed, one completed task run per DVC stage, tagged with family and source
    flow_run, task_runs = prefect_runs(urls, record["flow_run_name"])
    assert flow_run["id"] == record["prefect_flow_run_id"] and flow_run["state_type"] == "COMPLETED"
    assert "tinyfoundry" in flow_run["tags"]
    assert sorted(t["name"] for t in task_runs) == sorted(stages)
    assert {t["state_type"] for t in task_runs} == {"COMPLETED"}
    for t in task_runs:  # e.g. ingest@web -> tags [ingest, web]
        assert set(t["name"].split("@")) <= set(t["tags"]), (t["name"], t["tags"])

    # MLflow: one parent run, a child run per stage, the registered model with its champion
    client = mlflow.MlflowClient(urls.mlflow)
    parent = client.get_run(record["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(stages)
    model = yaml.safe_load((project / "params.yaml").read_text())["tracking"]["model_name"]
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.tags.get("checkpoint_sha256")

    # the run report went to disk and into the parent run, with both ids in it
    report = project / "reports" / f"{record['flow_run_name']}.md"
    assert record["mlflow_run_id"] in report.read_text() and flow_run["id"] in report.read_text()
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert report.name in logged and report.with_suffix(".html").name in logged


def test_planted_benchmark_items_never_reach_the_tokenizer(tiny_pipeline, tmp_path_factory):
    """Items planted in every source reach decontaminate's input, none of their 13-grams reach the tokenizer's,
    and the run report shows the decontamination per benchmark."""
    from tasks.decontaminate.ngrams import normal_words
    from tasks.docs import iter_docs

    project, _, _, record, _ = tiny_pipeline
    items = json.loads((tmp_path_factory.getbasetemp() / "planted" / "planted.json").read_text())
    n = yaml.safe_load((project / "params.yaml").read_text())["decontaminate"]["ngram_words"]
    grams = {}
    for item in items:
        words = normal_words(item["text"])
        grams.update({" ".join(words[i:i + n]): item["task"] for i in range(len(words) - n + 1)})

    def found(folder: str) -> dict[str, set[str]]:
        """source -> tasks whose planted n-grams occur in that source's documents in `folder`"""
        out: dict[str, set[str]] = {}
        for doc in iter_docs(project / folder):
            words = normal_words(doc["text"])
            hits = {grams[g] for g in (" ".join(words[i:i + n]) for i in range(len(words) - n + 1)) if g in grams}
            if hits:
                out.setdefault(doc["metadata"]["source"], set()).update(hits)
        return out

    assert found("data/filter") == {s: {"piqa", "openbookqa"} for s in ("web", "books", "code")}
    assert found("data/decontam") == {}
    stats = json.loads((project / "metrics" / "decontaminate.json").read_text())
    assert all(stats["tasks"][t]["docs_hit"] >= 3 for t in ("piqa", "openbookqa")), stats["tasks"]
    report = (project / "reports" / f"{record['flow_run_name']}.md").read_text()
    section = report.split("## Decontamination", 1)[1].split("\n## ", 1)[0]
    for task in ("piqa", "openbookqa"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {task} |"))
        assert f"| {stats['tasks'][task]['docs_hit']} |" in row, row


@pytest.mark.extended  # the browser's look (~15 s each); make test checks the same runs through the APIs
def test_ui_shows_the_tiny_pipeline_run(browser, tiny_pipeline):
    """Headless Chromium sees the run in both UIs: flow run, task runs and their logs; experiment, stage runs,
    and the model with its `champion` alias."""
    import mlflow

    project, urls, env, record, _ = tiny_pipeline
    stages = dvc_stage_names(project)
    flow_run, task_runs = prefect_runs(urls, record["flow_run_name"])
    client = mlflow.MlflowClient(urls.mlflow)
    parent = client.get_run(record["mlflow_run_id"])
    model = yaml.safe_load((project / "params.yaml").read_text())["tracking"]["model_name"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    check_prefect_ui(page, urls, flow_run, task_runs, "pipeline-")
    check_mlflow_ui(page, urls, parent.info.experiment_id, parent.info.run_name, stages, model, "pipeline-")
    page.close()


# ---------------------------------------------------------------------------------------------- model registry
# Issue 15: the run's kept checkpoints are comparable, evaluated versions that load and serve through MLflow,
# with lineage back to the fetched files. All on the same tiny pipeline run (the module's fixture).


def _model_name(project: Path) -> str:
    return yaml.safe_load((project / "params.yaml").read_text())["tracking"]["model_name"]


def _train_run(client, record: dict):
    parent = client.get_run(record["mlflow_run_id"])
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.run_name = 'train'")
    assert len(runs) == 1
    return runs[0]


def test_registry_holds_the_runs_checkpoints_with_metrics_and_champion_on_the_best(tiny_pipeline):
    import mlflow

    from tasks.evaluate.registry import best_of
    from tasks.model_registry import version_metrics

    project, urls, env, record, _ = tiny_pipeline
    client, name = mlflow.MlflowClient(urls.mlflow), _model_name(project)
    train = _train_run(client, record)
    versions = sorted(client.search_model_versions(f"name='{name}' and tag.train_run_id='{train.info.run_id}'"),
                      key=lambda v: int(v.tags["step"]))
    params = yaml.safe_load((project / "params.yaml").read_text())
    kept = params["train"]["keep_checkpoints"]
    assert len(versions) == kept >= 2  # the kept checkpoints; the final model is the last of them
    assert int(versions[-1].tags["step"]) == params["train"]["max_steps"]
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    metric = evaluation["champion"]["metric"]
    values = {}
    for v in versions:
        m = version_metrics(client, v)
        assert {metric, "bpb/web", "bpb/books", "tokens_seen", "val/loss"} <= set(m), m
        assert m["tokens_seen"] == int(v.tags["tokens_seen"]) and v.tags[metric] == f"{m[metric]:.4f}"
        values[int(v.version)] = (m[metric], int(v.tags["step"]))
    champion = client.get_model_version_by_alias(name, "champion")
    assert int(champion.version) == best_of(values, evaluation["champion"]["mode"]) == evaluation["champion_version"]
    assert {c["version"] for c in evaluation["candidates"].values()} == set(values)


def test_the_champion_loads_through_mlflow_and_serves(tiny_pipeline, tmp_path):
    """`mlflow.transformers.load_model` gives a text-generation pipeline; `mlflow models serve` (a real server on
    127.0.0.1, `--env-manager local` as offline) answers a generate request with the same text."""
    import mlflow

    from flows.servers import free_port, stop, wait_healthy

    project, urls, env, record, _ = tiny_pipeline
    uri = f"models:/{_model_name(project)}@champion"
    mlflow.set_tracking_uri(urls.mlflow)
    prompt = "The history of the city"
    generator = mlflow.transformers.load_model(uri)
    text = generator(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith(prompt)
    expected = mlflow.pyfunc.load_model(uri).predict([prompt], params={"max_new_tokens": 8})

    port = free_port()
    log = tmp_path / "serve.log"
    serve_env = {**env, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri,
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=project,
                                env=serve_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/ping", proc, "mlflow models serve", log, 300)
        answer = api(f"http://127.0.0.1:{port}/invocations", {"inputs": [prompt], "params": {"max_new_tokens": 8}})
    finally:
        stop(proc, "mlflow models serve")
    assert answer == {"predictions": expected}, (answer, expected)
    assert answer["predictions"][0].startswith(prompt)


def test_lineage_command_prints_hashes_back_to_the_fetched_files(tiny_pipeline):
    import hashlib

    project, urls, env, record, _ = tiny_pipeline
    name = _model_name(project)
    cmd = [sys.executable, "-m", "tasks", "lineage", f"models:/{name}@champion"]
    res = subprocess.run([*cmd, "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    chain = json.loads(res.stdout)
    import mlflow

    client = mlflow.MlflowClient(urls.mlflow)
    champion = client.get_model_version_by_alias(name, "champion")
    assert chain["model"]["version"] == int(champion.version) and "champion" in chain["model"]["aliases"]
    assert chain["model"]["checkpoint_sha256"] == champion.tags["checkpoint_sha256"]
    assert chain["train_run"]["run_id"] == _train_run(client, record).info.run_id
    manifest = project / "data" / "shards" / "manifest.json"
    assert chain["shard_manifest"]["matches"] is True
    assert chain["shard_manifest"]["sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    stages = [s["stage"] for s in chain["stages"]]
    assert set(stages) == {"shard", "mix", "tokenizer", "decontaminate", "filter", "dedup", "ingest@web",
                           "ingest@books", "ingest@code", "fetch@web", "fetch@books", "fetch@code", "fetch@eval",
                           "fetch@reference"}, stages
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert all(s["outs"] == lock[s["stage"]]["outs"] for s in chain["stages"])
    assert chain["dvc_lock"]["upstream_changed_since"] == []
    params = yaml.safe_load((project / "params.yaml").read_text())
    for source in ("web", "books", "code"):
        fetched = chain["fetched"][f"fetch@{source}"]
        assert [s["uri"] for s in fetched["sources"]] == params["fetch"][source]["uris"]
        files = {f["relpath"]: f["md5"] for f in fetched["files"]}
        on_disk = {p.relative_to(project / "data" / "raw" / source).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                   for p in (project / "data" / "raw" / source).rglob("*") if p.is_file()}
        assert files == on_disk and files
    text = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300).stdout
    web_file, web_md5 = next(iter(sorted({f["relpath"]: f["md5"] for f in chain["fetched"]["fetch@web"]["files"]}.items())))
    assert f"version {champion.version} of {name}" in text and f"{web_file}  md5 {web_md5}" in text


def test_prefect_has_the_report_artifact_and_readable_stage_logs(tiny_pipeline):
    from tasks.metrics_schema import missing

    project, urls, env, record, _ = tiny_pipeline
    artifacts = api(f"{urls.prefect_api}/artifacts/filter",
                    {"artifacts": {"flow_run_id": {"any_": [record["prefect_flow_run_id"]]}}})
    report = [a for a in artifacts if a["key"] == "tinyfoundry-run-report"]
    assert len(report) == 1 and report[0]["type"] == "markdown"
    body = report[0]["data"]
    champion = json.loads((project / "metrics" / "eval.json").read_text())["champion_version"]
    assert record["mlflow_run_id"] in body and f"models:/{_model_name(project)}/{champion}" in body
    assert "## Candidates" in body and "**champion**" in body

    # a stage's Prefect log: our lines and the result, not datatrove's per-file lines (those stay in the file)
    flow_run, task_runs = prefect_runs(urls, record["flow_run_name"])
    ingest = next(t for t in task_runs if t["name"] == "ingest@web")
    lines = [entry["message"] for entry in api(f"{urls.prefect_api}/logs/filter",
                                               {"logs": {"task_run_id": {"any_": [ingest["id"]]}}, "limit": 200})]
    full = (project / ".tinyfoundry" / "logs" / record["flow_run_name"] / "ingest@web.log").read_text()
    assert "Reading input file" in full and not any("Reading input file" in line for line in lines)
    assert any("stage ingest@web: starting" in line for line in lines)
    assert any("full log:" in line for line in lines)
    assert any(" docs in → " in line and "dropped" in line for line in lines)  # the result line
    assert len(lines) < len(full.splitlines())

    # one metrics schema: every real metrics file has the keys the report reads, and the report shows them
    for path in (project / "metrics").glob("*.json"):
        stage = "evaluate" if path.stem == "eval" else path.stem.split("_")[0]
        assert missing(stage, json.loads(path.read_text())) == [], path.name
    md = (project / "reports" / f"{record['flow_run_name']}.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in md.splitlines() if line.startswith("| ")}
    for stage in ("ingest@web", "dedup", "filter", "shard"):
        assert rows[stage][3].strip() not in ("", "–") and rows[stage][4].strip() not in ("", "–"), rows[stage]


def check_registry_ui(page, urls, model: str, versions: list, metric: str, shot_prefix: str) -> None:
    """The model page lists the versions with their headline metrics (version tags) and the champion alias; the
    registry's Compare view shows each version's metrics."""
    import urllib.parse

    expect = __import__("playwright.sync_api", fromlist=["expect"]).expect
    page.goto(f"{urls.mlflow}/#/models/{model}")
    for v in versions:
        expect(page.get_by_text(f"Version {v.version}", exact=True).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(metric).first).to_be_visible()
    expect(page.get_by_text("val_bpb").first).to_be_visible()
    expect(page.get_by_text("champion").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}mlflow-model-versions.png"), full_page=True)
    runs = urllib.parse.quote(json.dumps({str(v.version): v.run_id for v in versions}))
    page.goto(f"{urls.mlflow}/#/compare-model-versions?name={urllib.parse.quote(json.dumps(model))}&runs={runs}")
    expect(page.get_by_text(f"Comparing {len(versions)} Versions").first).to_be_visible(timeout=60_000)
    # "Show diff only" (on by default) hides a metric the versions share, e.g. the same accuracy on 8 items
    switches, turned_off = page.get_by_role("switch"), 0
    for i in range(switches.count()):
        if switches.nth(i).is_checked():
            switches.nth(i).click()
            expect(switches.nth(i)).not_to_be_checked()
            turned_off += 1
    assert turned_off, "no 'Show diff only' switch turned off on the Compare page"
    expect(page.get_by_text(metric).first).to_be_visible()
    expect(page.get_by_text("bpb/web").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}mlflow-compare-versions.png"), full_page=True)


def check_prefect_artifact(page, urls, flow_run: dict, shot_prefix: str) -> None:
    expect = __import__("playwright.sync_api", fromlist=["expect"]).expect
    page.goto(f"{urls.prefect_ui}/runs/flow-run/{flow_run['id']}")
    expect(page.get_by_text(flow_run["name"]).first).to_be_visible(timeout=60_000)
    page.get_by_text("Artifacts", exact=True).first.click()
    expect(page.get_by_text("tinyfoundry-run-report").first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot_prefix}prefect-artifacts.png"), full_page=True)


@pytest.mark.extended  # the browser's look (~15 s each); make test checks the same runs through the APIs
def test_ui_shows_the_versions_and_the_report_artifact(browser, tiny_pipeline):
    import mlflow

    project, urls, env, record, _ = tiny_pipeline
    client, name = mlflow.MlflowClient(urls.mlflow), _model_name(project)
    versions = client.search_model_versions(f"name='{name}' and tag.train_run_id='{_train_run(client, record).info.run_id}'")
    assert len(versions) >= 2
    metric = json.loads((project / "metrics" / "eval.json").read_text())["champion"]["metric"]
    flow_run, _ = prefect_runs(urls, record["flow_run_name"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    check_registry_ui(page, urls, name, versions, metric, "pipeline-")
    check_prefect_artifact(page, urls, flow_run, "pipeline-")
    page.close()
