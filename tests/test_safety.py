"""Nothing outside a fetched tree gets in, nothing unreadable goes missing uncounted, decompression is capped,
checkpoints load without unpickling code, and credentials never reach logs or MLflow params."""
from __future__ import annotations

import ast
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import yaml

from tasks.config.executor import ExecutorConfig
from tasks.config.fetch import SourceFetchConfig
from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
from tasks.docs import iter_docs
from tasks.fetch import run_fetch
from tasks.ingest import run_ingest
from tasks.redact import redact

ROOT = Path(__file__).resolve().parents[1]
ONE = ExecutorConfig(tasks=1, workers=1)
SECRET = "aws_secret_access_key = wJalrXUtnFEMI-THIS-MUST-NOT-LEAK"
PY = "def add(a, b):\n    \"\"\"Sum of two numbers.\"\"\"\n    return a + b\n\n\nprint(add(1, 2))\n"


@pytest.fixture
def credentials(tmp_path) -> Path:
    """A stand-in for ~/.aws/credentials outside every tree the pipeline reads."""
    path = tmp_path / "home" / ".aws" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_text(f"[default]\n{SECRET}\n")
    return path


def all_bytes(folder: Path) -> bytes:
    """Every file under `folder`, gzip members inflated (so a secret inside a .jsonl.gz is found too)."""
    out = b""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            raw = p.read_bytes()
            out += gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return out


def git(*args, cwd=None):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env)


# ------------------------------------------------------------------------------------------------ symlinks


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_repo_linking_to_credentials_puts_nothing_of_them_in_fetch_or_ingest(tmp_path, credentials):
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "main.py").write_text(PY)
    os.symlink(credentials, work / "setup.py")  # the issue's `setup.py -> ~/.aws/credentials`
    os.symlink(credentials.parent, work / "aws")  # a linked directory
    git("init", "-q", str(work))
    git("add", ".", cwd=work)
    git("commit", "-qm", "init", cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp_path / "tool.git"))

    stats = run_fetch(SourceFetchConfig(uris=[f"file://{tmp_path / 'tool.git'}"]), {}, tmp_path / "raw")
    fetched = sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*"))
    assert fetched == ["tool", "tool/pkg", "tool/pkg/main.py"]
    assert stats["files"] == 1 and stats["rejects"] == {"symlink": 2}
    assert {r["path"].split(" ")[0] for r in stats["rejected_paths"]} == {"tool/setup.py", "tool/aws"}
    assert SECRET.encode() not in all_bytes(tmp_path / "raw")

    # code ingest refuses links too, when a tree reaches it by another route
    raw = tmp_path / "raw2" / "tool"
    shutil.copytree(work, raw, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    assert (raw / "setup.py").is_symlink()
    out = run_ingest(CodeIngestConfig(executor=ONE), {"raw": tmp_path / "raw2"}, tmp_path / "ingest")
    assert [d["id"] for d in iter_docs(tmp_path / "ingest")] == ["tool/pkg/main.py"]
    assert out["dropped"]["symlink"] == 2
    assert SECRET.encode() not in all_bytes(tmp_path / "ingest")


def test_copy_tree_counts_every_path_it_does_not_copy(tmp_path, credentials, caplog):
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "ok.py").write_text(PY)
    os.symlink(credentials, tree / "src" / "creds.py")
    os.symlink("ok.py", tree / "src" / "alias.py")  # inside the tree: still a link, still not followed
    os.symlink(tmp_path / "missing", tree / "dangling.py")
    os.symlink(credentials.parent, tree / "linked_dir")
    os.mkfifo(tree / "pipe.py")
    caplog.set_level("WARNING", "tinyfoundry.fetch")
    stats = run_fetch(SourceFetchConfig(uris=[str(tree)]), {}, tmp_path / "raw")
    assert [p.name for p in (tmp_path / "raw").rglob("*") if p.is_file()] == ["ok.py"]
    assert stats["rejects"] == {"symlink": 4, "not_regular_file": 1}
    assert "tree: skipped 4 symlink path(s) (links are not followed out of a fetched tree)" in caplog.text


UNPRIVILEGED = """
import json, sys
from pathlib import Path
from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import CodeIngestConfig
from tasks.fetch import copy_tree
from tasks.ingest import run_ingest
src, work = Path(sys.argv[1]), Path(sys.argv[2])
copied = copy_tree(src, work / "copy", [])
stats = run_ingest(CodeIngestConfig(executor=ExecutorConfig(tasks=1, workers=1)), {"raw": src}, work / "ingest")
print(json.dumps({"copied": copied.files, "rejects": copied.rejects, "dropped": stats["dropped"]}))
"""


def test_unreadable_paths_are_counted_not_dropped(tmp_path):
    """A directory that cannot be listed and a file that cannot be read are rejects in fetch and in code ingest.
    As root everything is readable, so the check then runs as the unprivileged user `nobody`."""
    base = Path(tempfile.mkdtemp(prefix="tf-unreadable-", dir="/tmp"))  # world-traversable, unlike pytest's tmp
    try:
        src, work = base / "repo", base / "work"
        (src / "locked_dir").mkdir(parents=True)
        (src / "ok.py").write_text(PY)
        (src / "locked_dir" / "hidden.py").write_text(PY)
        (src / "locked.py").write_text(PY)
        work.mkdir()
        for path, mode in ((base, 0o755), (src, 0o755), (src / "ok.py", 0o644), (work, 0o777),
                           (src / "locked_dir", 0o000), (src / "locked.py", 0o000)):
            path.chmod(mode)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        env = {**os.environ, "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(work)}
        proc = subprocess.run([*as_nobody, sys.executable, "-c", UNPRIVILEGED, str(src), str(work)], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["copied"] == 1
        assert sorted(p.split(" ")[0] for p in result["rejects"]["unreadable"]) == ["locked.py", "locked_dir"]
        assert result["dropped"]["unreadable_dir"] == 1 and result["dropped"]["unreadable_file"] == 1
    finally:
        for path in (base / "repo" / "locked_dir", base / "repo" / "locked.py"):
            path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------- decompression caps


def gzip_bomb(inflated_mb: int) -> bytes:
    """Concatenated gzip members of 1 MB of zeros each: ~1 KB per inflated MB (a valid multi-member gzip)."""
    return gzip.compress(b"\0" * 2**20) * inflated_mb


def test_book_decompression_is_capped_and_counted(tmp_path, shared_data):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pg1.txt.gz").write_bytes(gzip_bomb(400))  # 400 MB once inflated, 400 KB on disk
    real = sorted((shared_data / "books").glob("*.txt.gz"), key=lambda p: p.stat().st_size)
    shutil.copy(real[0], raw / real[0].name)  # the smallest real book: kept
    big = gzip.decompress(real[-1].read_bytes())
    (raw / "pg2.txt").write_bytes(big)  # uncompressed, over the cap by its size alone
    cap = max(len(gzip.decompress(real[0].read_bytes())), 2**20) + 1
    assert len(big) > cap

    tracemalloc.start()
    stats = run_ingest(BooksIngestConfig(executor=ONE, max_book_bytes=cap), {"raw": raw}, tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert stats["dropped"] == {"too_large": 2} and stats["docs_out"] == 1
    assert peak < 100 * 2**20, f"reading a 400 MB gzip bomb peaked at {peak / 2**20:.0f} MB"
    reasons = {d["id"]: d["metadata"] for d in iter_docs(tmp_path / "out", "rejects")}
    assert reasons["pg1"]["inflates_beyond"] == cap and reasons["pg2"]["file_bytes"] == len(big)


def test_warc_record_decompression_is_capped_and_counted(tmp_path):
    """An HTTP body sent with Content-Encoding: gzip is small in the WARC and huge once decoded."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    raw = tmp_path / "raw"
    raw.mkdir()
    with open(raw / "bomb.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        bomb = gzip.compress(b"\0" * 64 * 2**20)  # one member, as an HTTP server sends it: ~64 KB
        for i, (body, encoding) in enumerate([(bomb, "gzip"), (b"<html><p>small page</p></html>", None)]):
            headers = [("Content-Type", "text/html")] + ([("Content-Encoding", encoding)] if encoding else [])
            http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"https://example.org/{i}", "response",
                                                          payload=io.BytesIO(body), http_headers=http))
    assert (raw / "bomb.warc.gz").stat().st_size < 200_000
    cfg = WebIngestConfig(executor=ONE, max_record_bytes=2**20, min_chars=0, languages=[], language_threshold=0)
    tracemalloc.start()
    stats = run_ingest(cfg, {"raw": raw}, tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert stats["dropped"].get("too_large") == 1
    assert peak < 100 * 2**20, f"reading a 64 MB WARC body bomb peaked at {peak / 2**20:.0f} MB"


# ---------------------------------------------------------------------------------------------- torch.load


def test_every_torch_load_is_weights_only():
    """torch.load unpickles arbitrary code unless weights_only=True: no call in the project may omit it."""
    offenders = []
    for path in sorted(p for d in ("tasks", "models", "flows", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_checkpoint_rank_state_loads_with_weights_only(tmp_path):
    import torch

    from tasks.train import checkpoint

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    path = checkpoint.save(tmp_path, 3, model, optimizer, {"loader": {"epoch": 1, "pos": 16, "seed": 0}}, {}, keep=1)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checkpoint.save(tmp_path, 4, model, optimizer, {"loader": {"epoch": 1, "pos": 32, "seed": 0}}, {}, keep=1)
    meta, state = checkpoint.load(tmp_path / "step_000004", model, optimizer)
    assert meta["step"] == 4 and state == {"loader": {"epoch": 1, "pos": 32, "seed": 0}}
    assert torch.equal(torch.rand(3), expected)  # the RNG state came back through the weights-only unpickler
    assert not path.exists()  # keep=1


# ------------------------------------------------------------------------------------------------ redaction


@pytest.mark.parametrize("text, expected", [
    ("https://user:hunter2@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("git clone https://ghp_abc123@github.com/x failed", "git clone https://***@github.com/x failed"),
    ("http://mlflow:s3cret@10.0.0.5:5000", "http://***@10.0.0.5:5000"),
    ("https://b.s3/x.warc.gz?X-Amz-Credential=AKIA&X-Amz-Signature=f00&part=2",
     "https://b.s3/x.warc.gz?X-Amz-Credential=***&X-Amz-Signature=***&part=2"),
    ("export HF_TOKEN=hf_abc && source .venv/bin/activate", "export HF_TOKEN=*** && source .venv/bin/activate"),
    ("MLFLOW_TRACKING_PASSWORD='two words' srun x", "MLFLOW_TRACKING_PASSWORD=*** srun x"),
    ("tool --password hunter2 --api-key=k3y --n 3", "tool --password *** --api-key=*** --n 3"),
    # nothing secret: unchanged
    ("source .venv/bin/activate", "source .venv/bin/activate"),
    ("sqlite:////work/mlflow.db and git@github.com:org/repo.git", "sqlite:////work/mlflow.db and git@github.com:org/repo.git"),
    ("tokens=512 tokenizer.vocab_size=8192 max_tokens=3", "tokens=512 tokenizer.vocab_size=8192 max_tokens=3"),
])
def test_redact_masks_credentials_and_nothing_else(text, expected):
    assert redact(text) == expected


def test_mlflow_params_of_a_stage_never_hold_credentials(mlflow_uri):
    import mlflow

    from tasks.tracking import stage_run

    slurm = {"kind": "slurm", "slurm": {"env_command": "export HF_TOKEN=hf_SECRET1 && source .venv/bin/activate"}}
    section = WebIngestConfig(executor=ExecutorConfig.model_validate(slurm)).model_dump()
    with stage_run("ingest@web", {**section, "uri": "https://bob:SECRET2@host/x.warc.gz"}, experiment="redact") as run:
        pass
    params = mlflow.MlflowClient(mlflow_uri).get_run(run.run_id).data.params
    assert params["executor.slurm.env_command"] == "export HF_TOKEN=*** && source .venv/bin/activate"
    assert params["uri"] == "https://***@host/x.warc.gz"
    assert "SECRET" not in json.dumps(params)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_stage_that_fails_on_a_uri_with_a_password_never_prints_it(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"]["code"] = {"uris": ["https://alice:SECRET3@127.0.0.1:9/tool.git"], "timeout_s": 5}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    from tasks.tracking import FLOW_ENV

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", FLOW_ENV: "1"}  # as under the flow: no MLflow run of its own
    proc = subprocess.run([sys.executable, "-m", "tasks", "fetch", "code", "--out", str(tmp_path / "raw"),
                           "--params", str(tmp_path / "params.yaml")], cwd=tmp_path, capture_output=True, text=True,
                          env=env)
    assert proc.returncode != 0
    assert "git clone of https://***@127.0.0.1:9/tool.git failed" in proc.stderr
    assert "SECRET3" not in proc.stdout + proc.stderr
