"""infra/ without Docker or Slurm: compose files, prefect.yaml, the sbatch script and executor profiles are
checked against the code and CLIs they name (pinned versions, real flags, real flow entrypoint, config schema)."""
from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent
COMPOSE = {"prefect": INFRA / "compose" / "prefect.yml", "mlflow": INFRA / "compose" / "mlflow.yml"}


def pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==", 1) for d in deps if "==" in d)


@lru_cache
def cli_help(*cmd: str) -> str:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:], "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"}).stdout


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def load_compose(name: str) -> dict:
    return yaml.safe_load(COMPOSE[name].read_text())


@pytest.mark.parametrize("name", list(COMPOSE))
def test_compose_file_structure(name):
    doc = load_compose(name)
    services = doc["services"]
    volumes = set(doc.get("volumes") or {})
    for svc_name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{svc_name}: neither image nor build"
        if "image" in svc:  # pinned: no floating :latest for servers we depend on
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), svc["image"]
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{svc_name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{svc_name} publishes {port} beyond loopback"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if not src.startswith((".", "/")):
                assert src in volumes, f"{svc_name} uses undeclared volume {src}"
        if "build" in svc:
            context = (COMPOSE[name].parent / svc["build"]["context"]).resolve()
            dockerfile = context / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{svc_name}: {dockerfile} missing"
            assert re.search(r"^FROM \S+:\S+", dockerfile.read_text(), re.M), f"{dockerfile} has no pinned FROM"
        # long-running servers carry a healthcheck so depends_on: service_healthy works
        if svc_name in ("prefect", "mlflow", "prefect-db", "mlflow-db", "minio"):
            assert svc["healthcheck"]["test"], svc_name


def test_compose_files_combine_into_one_project():
    """`docker compose -f prefect.yml -f mlflow.yml` merges them: same project name, no clashing names/ports."""
    a, b = load_compose("prefect"), load_compose("mlflow")
    assert a["name"] == b["name"]
    assert not set(a["services"]) & set(b["services"])
    assert not set(a.get("volumes") or {}) & set(b.get("volumes") or {})
    ports = [p for d in (a, b) for s in d["services"].values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))
    # the Docker work pool joins that project's network
    deployments = yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]
    docker = next(d for d in deployments if d["work_pool"]["name"] == "tinyfoundry-docker")
    assert docker["work_pool"]["job_variables"]["networks"] == [f"{a['name']}_default"]
    assert docker["work_pool"]["job_variables"]["env"]["PREFECT_API_URL"].startswith("http://prefect:4200")
    assert docker["work_pool"]["job_variables"]["env"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_compose_server_images_match_pinned_clients():
    p = pins()
    assert load_compose("prefect")["services"]["prefect"]["image"].startswith(f"prefecthq/prefect:{p['prefect']}-")
    assert f"ghcr.io/mlflow/mlflow:v{p['mlflow']}" in (INFRA / "mlflow.Dockerfile").read_text()
    assert load_compose("mlflow")["services"]["mlflow"]["image"].endswith(f":{p['mlflow']}")


def test_compose_commands_use_real_cli_flags():
    prefect_cmd = load_compose("prefect")["services"]["prefect"]["command"]
    assert prefect_cmd[:3] == ["prefect", "server", "start"]
    help_text = cli_help("prefect", "server", "start")
    for flag in flags(prefect_cmd):
        assert flag in help_text, f"prefect server start has no {flag}"
    mlflow_cmd = load_compose("mlflow")["services"]["mlflow"]["command"]
    assert mlflow_cmd[:2] == ["mlflow", "server"]
    help_text = cli_help("mlflow", "server")
    for flag in flags(mlflow_cmd):
        assert flag in help_text, f"mlflow server has no {flag}"
    backend = next(a for a in mlflow_cmd if a.startswith("--backend-store-uri="))
    assert "@mlflow-db:5432/" in backend
    env = load_compose("prefect")["services"]["prefect"]["environment"]
    assert "@prefect-db:5432/" in env["PREFECT_API_DATABASE_CONNECTION_URL"]


def test_project_dockerfile_copies_existing_paths_and_pins():
    text = (INFRA / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"infra/Dockerfile copies {src}, which does not exist"
    p = pins()
    assert f"torch=={p['torch']}" in text and f"fasttext-numpy2-wheel=={p['fasttext-numpy2-wheel']}" in text


def test_prefect_yaml_validates_and_points_at_the_flow():
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.workers.process import ProcessWorker

    raw = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert raw["prefect-version"] == pins()["prefect"]
    pools = {d.work_pool.name: d for d in model.deployments}
    assert set(pools) == {"tinyfoundry-process", "tinyfoundry-docker"}
    # job variables must exist in the pool type's base job template, or the worker ignores them
    process_vars = set(ProcessWorker.get_default_base_job_template()["variables"]["properties"])
    assert set(pools["tinyfoundry-process"].work_pool.job_variables) <= process_vars
    docker_vars = {"image", "image_pull_policy", "networks", "network_mode", "auto_remove", "volumes",
                   "stream_output", "mem_limit", "memswap_limit", "privileged", "container_create_kwargs",
                   "env", "labels", "name", "command"}  # prefect-docker's DockerWorkerJobConfiguration
    assert set(pools["tinyfoundry-docker"].work_pool.job_variables) <= docker_vars
    # the nightly schedule is the one params.yaml declares for `make serve`
    cron = yaml.safe_load((ROOT / "params.yaml").read_text())["flow"]["schedule_cron"]
    assert [s.cron for s in pools["tinyfoundry-process"].schedules] == [cron]
    for d in model.deployments:
        path, func = d.entrypoint.split(":")
        source = ROOT / path
        if not source.exists():
            pytest.skip(f"{path} (the lead's flow) not in this tree yet")
        tree = ast.parse(source.read_text())
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
        assert fn is not None, f"{d.entrypoint}: no function {func}"
        decorators = [ast.unparse(x) for x in fn.decorator_list]
        assert any(x.startswith("flow") for x in decorators), f"{func} is not a @flow"
        params = {a.arg for a in fn.args.args}
        assert set(d.parameters) <= params, f"{d.name} passes {set(d.parameters) - params} the flow lacks"


def test_sbatch_script_syntax_and_directives():
    script = INFRA / "slurm" / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))
    assert int(directives["nodes"]) >= 2 and directives["ntasks-per-node"] == "1"
    assert os.access(script, os.X_OK)


def test_sbatch_runs_one_torchrun_per_node_with_the_dvc_train_command(tmp_path):
    """Run the script with stub srun/scontrol/torchrun/dvc: the torchrun line must match dvc.yaml's train cmd."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls.log"
    for name, body in {"scontrol": 'printf "gpu-a17\\ngpu-a18\\n"',
                       "srun": f'echo "srun $*" >> {log}; while [[ $1 == --* ]]; do shift; done; exec "$@"',
                       "torchrun": f'echo "torchrun $*" >> {log}', "dvc": f'echo "dvc $*" >> {log}',
                       "python": f'echo "python $*" >> {log}'}.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    work = tmp_path / "proj"
    (work / "profiles").mkdir(parents=True)
    (work / "profiles" / "gpu.yaml").write_text("train: {}\n")
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-a[17-18]",
           "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(work), "SLURM_GPUS_ON_NODE": "4", "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(INFRA / "slurm" / "train.sbatch"), "profiles/gpu.yaml"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    torchrun = shlex.split(next(c for c in calls if c.startswith("torchrun")))
    assert "--nnodes=2" in torchrun and "--nproc-per-node=4" in torchrun
    assert "--rdzv-endpoint=gpu-a17:29500" in torchrun and "--rdzv-backend=c10d" in torchrun
    train_cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    dvc_args = shlex.split(train_cmd)[shlex.split(train_cmd).index("-m"):]
    got = torchrun[torchrun.index("-m"):]
    assert got == dvc_args  # params come from params.yaml alone, which the profile's train section was written into
    assert calls.index("python -m tasks profile profiles/gpu.yaml --apply --only train") < calls.index(
        next(c for c in calls if c.startswith("torchrun")))
    assert calls[-1] == "dvc commit --force train"
    # and a missing profile is refused before anything is submitted
    bad = subprocess.run(["bash", str(INFRA / "slurm" / "train.sbatch"), "nope.yaml"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "nope.yaml not found" in bad.stderr


@pytest.mark.parametrize("kind", ["slurm", "ray"])
def test_executor_profiles_validate_against_config_and_datatrove(kind):
    from datatrove.executor import RayPipelineExecutor, SlurmPipelineExecutor

    from tasks.config import load_config

    cfg = load_config(ROOT / "params.yaml", INFRA / "executors" / f"{kind}.yaml")
    executors = [cfg.section(f"ingest.{s}").executor for s in ("web", "books", "code")]
    executors += [cfg.section("filter").executor, cfg.section("decontaminate").executor]
    for ex in executors:
        assert ex.kind == kind and ex.tasks >= ex.workers
    settings = getattr(executors[0], kind)
    target = {"slurm": SlurmPipelineExecutor, "ray": RayPipelineExecutor}[kind]
    accepted = set(inspect.signature(target.__init__).parameters)
    shared = {"partition", "time", "cpus_per_task", "mem_per_cpu_gb", "env_command"} & set(type(settings).model_fields)
    assert shared and shared <= accepted, f"{target.__name__} lacks {shared - accepted}"


def test_servers_commands_use_real_flags(tmp_path):
    from flows.servers import mlflow_command, prefect_command

    for cmd, help_cmd in ((prefect_command(4200), ("prefect", "server", "start")),
                          (mlflow_command(tmp_path, 5000), ("mlflow", "server"))):
        assert "127.0.0.1" in cmd
        text = cli_help(*help_cmd)
        for flag in flags(cmd):
            assert flag in text, f"{' '.join(help_cmd)} has no {flag}"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_compose_config_with_docker_client_if_it_has_compose():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker client has no compose plugin here")
    res = subprocess.run(["docker", "compose", "-f", str(COMPOSE["prefect"]), "-f", str(COMPOSE["mlflow"]),
                          "config", "--quiet"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
