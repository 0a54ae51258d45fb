"""Resume keys (tasks/resume.py): partial work is reused only under the same code, input contents and params."""
from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

import pytest

import tasks.resume as resume
from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import WebIngestConfig
from tasks.docs import iter_docs
from tasks.ingest import run_ingest
from tasks.ingest.common import DocsWriter
from tasks.resume import code_files, describe_changes, resumable_dir, stage_key
from tests.test_ingest import crash_rank_1, good_page, warc_bytes

ROOT = Path(__file__).resolve().parents[1]

DVC_YAML = textwrap.dedent("""
    stages:
      fetch:
        foreach: [a, b]
        do:
          cmd: python -m tasks fetch ${item} --out data/raw/${item}
          deps: [tasks/fetch.py]
          outs: ["data/raw/${item}"]
      ingest:
        foreach: [a, b]
        do:
          cmd: python -m tasks ingest ${item}
          deps: ["data/raw/${item}", tasks/ingest, "tasks/ingest_${item}.py", tasks/shared.py]
          outs: ["data/ingest/${item}"]
      train:
        cmd: python -m tasks train
        deps: [data/ingest/a, models]
        outs: [data/model, {checkpoints: {persist: true, cache: false}}]
""")


def tiny_project(root: Path) -> Path:
    root.mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    for rel in ("tasks/fetch.py", "tasks/ingest/__init__.py", "tasks/ingest/reader.py", "tasks/ingest_a.py",
                "tasks/ingest_b.py", "tasks/shared.py", "models/llama.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    (root / "tasks/ingest/__pycache__").mkdir()
    (root / "tasks/ingest/__pycache__/reader.cpython-311.pyc").write_bytes(b"\0")
    return root


def test_code_files_are_the_stage_deps_that_no_stage_produces(tmp_path):
    root = tiny_project(tmp_path / "p")
    rel = lambda stage: [f.relative_to(root).as_posix() for f in code_files(stage, root)]  # noqa: E731
    assert rel("ingest@a") == ["tasks/ingest/__init__.py", "tasks/ingest/reader.py", "tasks/ingest_a.py",
                               "tasks/shared.py"]  # data/raw/a is fetch@a's output; __pycache__ is skipped
    assert rel("ingest@b")[2] == "tasks/ingest_b.py"
    assert rel("train") == ["models/llama.py"]
    with pytest.raises(KeyError, match="no stage 'dedup'"):
        code_files("dedup", root)


def test_the_real_stages_key_their_own_code():
    assert {"tasks/ingest/web.py", "tasks/resume.py"} <= {f.relative_to(ROOT).as_posix() for f in code_files("ingest@web")}
    train = {f.relative_to(ROOT).as_posix() for f in code_files("train")}
    assert {"models/llama.py", "tasks/train/trainer.py", "tasks/config/train.py"} <= train
    assert not any(f.startswith("data/") for f in train)


def test_key_changes_with_code_input_contents_and_params_and_says_which(tmp_path):
    root = tiny_project(tmp_path / "p")
    data = tmp_path / "raw"
    data.mkdir()
    (data / "x.txt").write_text("hello world")
    key = lambda: stage_key("ingest@a", {"min_chars": 10, "executor": {"tasks": 2}}, {"raw": data}, root)  # noqa: E731
    first = key()
    assert key() == first  # stable

    (data / "x.txt").write_text("HELLO WORLD")  # same name, same size, other content
    second = key()
    assert second != first and describe_changes(first, second) == "input contents changed (raw)"

    (root / "tasks/ingest/reader.py").write_text("# a fix\n")
    third = key()
    assert describe_changes(second, third) == "code changed (tasks/ingest/reader.py)"

    fourth = stage_key("ingest@a", {"min_chars": 20, "executor": {"tasks": 2}}, {"raw": data}, root)
    assert describe_changes(third, fourth) == "params changed (min_chars: 10 -> 20)"
    assert describe_changes(None, fourth).startswith("it has no resume key")


def test_resumable_dir_resumes_only_under_the_same_key(tmp_path, caplog):
    out = tmp_path / "out"
    key = {"stage": "s", "code": {"a.py": "1"}, "inputs": {}, "params": {"n": 1}}
    with pytest.raises(RuntimeError):
        with resumable_dir(out, key) as staging:
            (staging / "done-part").write_text("x")
            raise RuntimeError("crash")
    caplog.set_level(logging.INFO, "tinyfoundry.resume")
    with resumable_dir(out, key) as staging:
        assert (staging / "done-part").exists()
    assert "resuming the partial output" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["done-part"]  # the key file is not part of the output

    with pytest.raises(RuntimeError):
        with resumable_dir(out, key) as staging:
            (staging / "done-part").write_text("x")
            raise RuntimeError("crash")
    changed = {**key, "code": {"a.py": "2"}}
    with resumable_dir(out, changed) as staging:
        assert not (staging / "done-part").exists()
    assert "starting clean" in caplog.text and "code changed (a.py)" in caplog.text


def test_ingest_after_a_crash_redoes_finished_tasks_when_inputs_or_code_changed(tmp_path, monkeypatch, caplog):
    """The old key was the input path and params: an edited input or edited code resumed stale shards."""
    project = tmp_path / "project"  # the stage's code as dvc.yaml lists it, in a copy we can edit
    for f in code_files("ingest@web"):
        (project / f.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, project / f.relative_to(ROOT))
    shutil.copy2(ROOT / "dvc.yaml", project / "dvc.yaml")
    monkeypatch.setattr(resume, "PROJECT_ROOT", project)
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in range(4):
        (raw / f"f{f}.warc.gz").write_bytes(b"".join(warc_bytes([good_page(10 * f + i) for i in range(3)])))
    cfg = WebIngestConfig(executor=ExecutorConfig(tasks=2, workers=1))
    out, staging = tmp_path / "out", tmp_path / ".out.partial"
    caplog.set_level(logging.INFO, "tinyfoundry.resume")

    real = crash_rank_1(monkeypatch)
    with pytest.raises(Exception) as crash:
        run_ingest(cfg, {"raw": raw}, out)
    assert (staging / "logs" / "completions" / "00000").exists(), crash.value
    # every input file gets new pages: a resumed rank 0 would keep the old ones
    for f in range(4):
        (raw / f"f{f}.warc.gz").write_bytes(b"".join(warc_bytes([good_page(100 + 10 * f + i) for i in range(3)])))
    monkeypatch.setattr(DocsWriter, "write", real)
    run_ingest(cfg, {"raw": raw}, out)
    urls = sorted(d["metadata"]["url"] for d in iter_docs(out))
    assert urls == sorted(f"https://good.example.org/p{100 + 10 * f + i}" for f in range(4) for i in range(3))
    assert "starting clean" in caplog.text and "input contents changed (raw)" in caplog.text

    caplog.clear()
    crash_rank_1(monkeypatch)
    with pytest.raises(Exception):
        run_ingest(cfg, {"raw": raw}, out)
    rank0 = staging / "docs" / "00000.jsonl.gz"
    rank0.write_text("stale output of the old code")
    with open(project / "tasks/ingest/web.py", "a") as f:
        f.write("# a bug fix\n")
    monkeypatch.setattr(DocsWriter, "write", real)
    run_ingest(cfg, {"raw": raw}, out)
    assert "code changed (tasks/ingest/web.py)" in caplog.text
    assert len(list(iter_docs(out))) == 12  # rank 0 was redone, not resumed from its stale shard
