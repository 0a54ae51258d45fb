"""ingest on the real files in ../shared/data (skipped with a reason when absent)."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
from tasks.docs import iter_docs
from tasks.ingest import run_ingest

ONE = ExecutorConfig(tasks=1, workers=1)
PROJECT = Path(__file__).resolve().parents[1]
# the small real WARCs: Common Crawl WARC/1.0, Heritrix WARC/0.17, wget with <...> Target-URIs
SMALL_WARCS = ["CC-MAIN-20200808165417-20200808195417-00395.sample.warc.gz",
               "IAH-20080430204825-00000-blackbook.warc.gz", "dolma-sample-0000.warc.gz"]


def html_200_responses(path: Path) -> int:
    """Independent count with plain warcio: HTTP 200 text/html response records."""
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as f:
        for r in ArchiveIterator(f):
            if r.rec_type == "response" and r.http_headers and r.http_headers.get_statuscode() == "200":
                n += (r.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower() == "text/html"
    return n


@pytest.mark.slow  # ~8 s CPU; ~30 s wall on a loaded 2-core machine (trafilatura on ~130 pages)
@pytest.mark.needs_shared_data
def test_real_warcs_1_0_and_0_17_and_wget(shared_data, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in SMALL_WARCS:
        os.symlink(shared_data / "web" / name, raw / name)
    stats = run_ingest(WebIngestConfig(executor=ONE, languages=[]), {"raw": raw}, tmp_path / "out")
    docs = list(iter_docs(tmp_path / "out"))
    by_file = Counter(d["metadata"]["source_file"] for d in docs)
    assert set(by_file) == set(SMALL_WARCS)  # WARC/0.17 (IAH) read too
    for d in docs:
        m = d["metadata"]
        assert m["url"].startswith("http") and not m["url"].startswith("<") and m["domain"] in m["url"]
        assert m["lang"] and 0 <= m["lang_score"] <= 1 and m["warc_record_id"] and m["date"] and m["source"] == "web"
    assert any(m["domain"].endswith("archive.org") for m in (d["metadata"] for d in docs))
    # every HTML 200 response is a document or a content-stage reject; no record vanishes
    content_reasons = {"extract_empty", "extract_timeout", "extract_error", "extract_crashed", "too_short",
                       "language", "language_score", "decode_error", "empty", "too_large"}
    rejected_html = sum(v for k, v in stats["dropped"].items() if k in content_reasons)
    assert len(docs) + rejected_html == sum(html_200_responses(raw / n) for n in SMALL_WARCS)
    assert stats["docs_in"] == 50 + 822 + 48  # all records, from SOURCES.md
    assert not any(k in stats["dropped"] for k in ("malformed_warc_header", "corrupt_gzip", "truncated_file"))


@pytest.mark.needs_shared_data
def test_real_books_all_32(shared_data, tmp_path):
    stats = run_ingest(BooksIngestConfig(executor=ExecutorConfig(tasks=2, workers=2)), {"raw": shared_data / "books"},
                       tmp_path / "out")
    docs = {d["id"]: d for d in iter_docs(tmp_path / "out")}
    names = sorted(p.name.split(".")[0] for p in (shared_data / "books").glob("*.txt.gz"))
    assert sorted(docs) == names and stats["dropped"] == {}
    for book_id, d in docs.items():
        m, text = d["metadata"], d["text"]
        assert m["ebook_number"] == int(book_id[2:]) and m["title"] and m["lang"] == "en"
        assert "\r" not in text and len(text) > 20000
        for phrase in ("Project Gutenberg License", "PROJECT GUTENBERG LICENSE", "START OF THE PROJECT",
                       "END OF THE PROJECT", "END OF THIS PROJECT", "gutenberg.org/license", "Gutenberg-tm"):
            assert phrase not in text, (book_id, phrase)
    latin = docs["pg21937"]
    assert latin["metadata"]["author"] == "Jóhann Sigurjónsson" and latin["metadata"]["encoding"] == "iso-8859-1"
    raw = gzip.decompress((shared_data / "books" / "pg11.txt.gz").read_bytes()).decode("utf-8")
    assert "Alice was beginning to get very tired" in docs["pg11"]["text"] and len(docs["pg11"]["text"]) < len(raw)


@pytest.mark.needs_shared_data
def test_real_books_split_and_byte_identical_reruns(shared_data, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for n in ("pg11", "pg21937", "pg17997"):
        os.symlink(shared_data / "books" / f"{n}.txt.gz", raw / f"{n}.txt.gz")
    cfg = BooksIngestConfig(executor=ExecutorConfig(tasks=2, workers=2), split_chars=50_000)
    run_ingest(cfg, {"raw": raw}, tmp_path / "a")
    run_ingest(cfg, {"raw": raw}, tmp_path / "b")
    a = sorted((tmp_path / "a" / "docs").glob("*.jsonl.gz"))
    assert a and [p.read_bytes() for p in a] == [(tmp_path / "b" / "docs" / p.name).read_bytes() for p in a]
    parts = [d for d in iter_docs(tmp_path / "a") if d["id"].startswith("pg11/")]
    assert len(parts) > 2 and all(len(p["text"]) <= 50_000 for p in parts)


def test_real_stdlib_code(tmp_path):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not (stdlib / "json" / "__init__.py").exists():
        pytest.skip(f"no Python stdlib source at {stdlib}")
    repo = tmp_path / "raw" / "python3.11-stdlib"
    for pkg in ("json", "email", "urllib"):
        shutil.copytree(stdlib / pkg, repo / pkg)
    license_file = next((stdlib / n for n in ("LICENSE.txt", "LICENSE") if (stdlib / n).exists()), None)
    if license_file:
        shutil.copy(license_file, repo / "LICENSE.txt")
    stats = run_ingest(CodeIngestConfig(executor=ONE), {"raw": tmp_path / "raw"}, tmp_path / "out")
    docs = list(iter_docs(tmp_path / "out"))
    py_files = [p for p in repo.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(docs) >= 0.9 * len(py_files) and stats["docs_out"] == len(docs)
    for d in docs:
        m = d["metadata"]
        assert m["language"] == "python" and m["repository"] == "python3.11-stdlib" and m["path"].endswith(".py")
        assert d["id"] == f"{m['repository']}/{m['path']}" and "__pycache__" not in m["path"]
        if license_file:
            assert m["license"] == "PSF-2.0"
    assert {"json/__init__.py", "email/message.py"} <= {d["metadata"]["path"] for d in docs}


@pytest.mark.needs_shared_data
def test_cli_writes_metrics_file(shared_data, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    os.symlink(shared_data / "books" / "pg11.txt.gz", raw / "pg11.txt.gz")
    metrics = tmp_path / "metrics" / "ingest_books.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TINYFOUNDRY_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "tasks", "ingest", "books", "--in", f"raw={raw}", "--out", str(tmp_path / "o"),
                    "--metrics", str(metrics), "--params", str(PROJECT / "params.yaml")],
                   cwd=PROJECT, env=env, check=True, capture_output=True, timeout=300)
    import json

    m = json.loads(metrics.read_text())
    assert m["docs_in"] == 1 and m["docs_out"] == 1 and m["bytes_out"] > 100_000 and m["dropped"] == {}
    assert "seconds" in m
