"""ingest on generated inputs: every kind of malformed file, counted drops, determinism, crash resume."""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
from tasks.docs import iter_docs
from tasks.ingest import logs_path, run_ingest
from tasks.ingest.common import DocsWriter

ONE = ExecutorConfig(tasks=1, workers=1)
ENGLISH = ("The river ran quietly past the old mill while the children of the village gathered on its banks "
           "to watch the boats go by. Their teachers had told them stories about the merchants who once "
           "carried wool and grain along this water to the markets of the city. ") * 3
GERMAN = ("Der Fluss floss ruhig an der alten Mühle vorbei, während sich die Kinder des Dorfes an seinem Ufer "
          "versammelten, um die Boote vorbeifahren zu sehen. Ihre Lehrer hatten ihnen Geschichten über die "
          "Kaufleute erzählt, die einst Wolle und Getreide zu den Märkten der Stadt brachten. ") * 3


def html(body: str, title: str = "Page") -> str:
    return (f"<html><head><title>{title}</title></head><body><nav>Home | About | Contact</nav>"
            f"<article><h1>{title}</h1><p>{body}</p></article><footer>(c) site</footer></body></html>")


def rejects(out: Path) -> list[dict]:
    return list(iter_docs(out, "rejects"))


# ------------------------------------------------------------------------------------------------ WARC

def warc_bytes(records: list[tuple], gz: bool = True, version: str = "WARC/1.0") -> list[bytes]:
    """One serialized record per item: ("response", url, status, content_type, body_bytes) or ("request", url)
    or ("warcinfo",) or ("conversion", url, text)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = []
    for spec in records:
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=gz, warc_version=version)
        kind = spec[0]
        if kind == "warcinfo":
            rec = writer.create_warcinfo_record("x.warc.gz", {"software": "test"})
        elif kind == "request":
            headers = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)
            rec = writer.create_warc_record(spec[1], "request", http_headers=headers)
        elif kind == "conversion":
            rec = writer.create_warc_record(spec[1], "conversion", payload=io.BytesIO(spec[2].encode()),
                                            warc_content_type="text/plain")
        else:
            _, url, status, ctype, body = spec
            headers = StatusAndHeaders(f"{status} X", [("Content-Type", ctype)], protocol="HTTP/1.1")
            rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
        writer.write_record(rec)
        out.append(buf.getvalue())
    return out


def good_page(i: int) -> tuple:
    return ("response", f"https://good.example.org/p{i}", "200 OK", "text/html; charset=utf-8",
            html(f"Page number {i}. " + ENGLISH, f"Good page {i}").encode())


def test_web_keeps_http200_html_and_counts_every_drop(tmp_path):
    records = [
        ("warcinfo",),
        ("request", "https://good.example.org/p0"),
        good_page(0),
        ("response", "https://good.example.org/missing", "404 Not Found", "text/html", html(ENGLISH).encode()),
        ("response", "https://good.example.org/logo.png", "200 OK", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(200)),
        ("response", "<https://wget.example.net/a>", "200 OK", "text/html", html(ENGLISH, "Wget").encode()),
        ("response", "https://good.example.org/latin", "200 OK", "text/html; charset=iso-8859-1",
         html("Café au lait, déjà vu. " + ENGLISH, "Latin").encode("latin-1")),
        ("response", "https://de.example.org/", "200 OK", "text/html", html(GERMAN, "Deutsch").encode()),
        ("response", "https://good.example.org/short", "200 OK", "text/html", html("Too short.").encode()),
        ("response", "https://ads.blocked.com/x", "200 OK", "text/html", html(ENGLISH).encode()),
        ("response", "https://good.example.org/empty", "200 OK", "text/html", b""),
    ]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.warc.gz").write_bytes(b"".join(warc_bytes(records)))
    cfg = WebIngestConfig(executor=ONE, url_blocklist=["blocked.com"])
    stats = run_ingest(cfg, {"raw": raw}, tmp_path / "out")

    docs = {d["metadata"]["url"]: d for d in iter_docs(tmp_path / "out")}
    assert sorted(docs) == ["https://good.example.org/latin", "https://good.example.org/p0", "https://wget.example.net/a"]
    meta = docs["https://wget.example.net/a"]["metadata"]
    assert meta["domain"] == "wget.example.net" and meta["source"] == "web" and meta["lang"] == "en"
    assert meta["warc_record_id"].startswith("<urn:uuid:") and meta["source_file"] == "a.warc.gz"
    assert meta["date"] and 0.65 <= meta["lang_score"] <= 1
    assert "Café au lait" in docs["https://good.example.org/latin"]["text"]
    assert "Home | About" not in docs["https://good.example.org/p0"]["text"]  # boilerplate removed by trafilatura

    expected = {"not_response": 2, "http_status": 1, "not_html": 1, "language": 1, "too_short": 1,
                "url_blocked": 1, "empty": 1}
    assert stats["dropped"] == expected
    assert stats["docs_in"] == len(records) and stats["docs_out"] == 3
    assert stats["bytes_out"] == sum(len(d["text"].encode()) for d in docs.values())
    by_reason = {}
    for r in rejects(tmp_path / "out"):
        by_reason[r["metadata"]["reject_reason"]] = by_reason.get(r["metadata"]["reject_reason"], 0) + 1
    assert by_reason == expected
    assert not (tmp_path / ".out.partial").exists()


def test_web_corrupt_files_lose_only_the_bad_records(tmp_path):
    pages = [good_page(i) for i in range(8)]
    members = warc_bytes(pages)
    raw = tmp_path / "raw"
    raw.mkdir()
    # truncated gzip: the last member cut in half
    (raw / "truncated.warc.gz").write_bytes(members[0] + members[1] + members[2][: len(members[2]) // 2])
    # corrupt gzip data inside the middle member (header intact, deflate stream garbage)
    bad = bytearray(members[4])
    bad[20:60] = b"\xff" * 40
    (raw / "corrupt.warc.gz").write_bytes(members[3] + bytes(bad) + members[5])
    # malformed WARC header inside a valid gzip member
    malformed = gzip.compress(b"WARC/1.0\r\nThis is: not\r\nContent-Length: banana\r\n\r\nxx\r\n\r\n", mtime=0)
    (raw / "malformed.warc.gz").write_bytes(members[6] + malformed + members[7])
    # plain (uncompressed) WARC with garbage between records
    plain = warc_bytes([good_page(10), good_page(11)], gz=False)
    (raw / "plain.warc").write_bytes(plain[0] + b"WARC/1.0\r\nbroken header line\r\n\r\n" + plain[1])
    (raw / "empty.warc.gz").write_bytes(b"")
    (raw / "notes.txt").write_text("not a warc")
    # a multi-megabyte single line of HTML, above max_record_bytes
    huge = ("response", "https://good.example.org/huge", "200 OK", "text/html",
            b"<html><body><p>" + b"word " * 700_000 + b"</p></body></html>")
    (raw / "huge.warc.gz").write_bytes(b"".join(warc_bytes([huge, good_page(12)])))

    cfg = WebIngestConfig(executor=ONE, max_record_bytes=2_000_000)
    stats = run_ingest(cfg, {"raw": raw}, tmp_path / "out")
    urls = sorted(d["metadata"]["url"].rsplit("/p", 1)[1] for d in iter_docs(tmp_path / "out"))
    assert urls == sorted(["0", "1", "3", "5", "6", "7", "10", "11", "12"])
    dropped = stats["dropped"]
    assert dropped.get("truncated_file", 0) + dropped.get("truncated_record", 0) + dropped.get("corrupt_gzip", 0) >= 2
    assert dropped["not_warc_file"] == 1 and dropped["too_large"] == 1
    assert sum(dropped.values()) >= 6  # each bad region is a counted, written reject
    assert len(rejects(tmp_path / "out")) == sum(dropped.values())


@pytest.mark.parametrize("cut", [0.1, 0.2, 0.5, 0.6, 0.9, 0.97])
def test_a_record_cut_short_anywhere_is_a_reject_never_a_partial_page(tmp_path, cut):
    # where a cut lands in the compressed bytes (and so what warcio sees) depends on the zlib build
    members = warc_bytes([good_page(i) for i in range(3)])
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cut.warc.gz").write_bytes(members[0] + members[1] + members[2][: int(len(members[2]) * cut)])
    stats = run_ingest(WebIngestConfig(executor=ONE), {"raw": raw}, tmp_path / "out")
    urls = sorted(d["metadata"]["url"].rsplit("/p", 1)[1] for d in iter_docs(tmp_path / "out"))
    assert urls == ["0", "1"]
    assert set(stats["dropped"]) <= {"truncated_file", "truncated_record"} and sum(stats["dropped"].values()) == 1


def test_wet_and_whole_file_gzip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    wet = warc_bytes([("conversion", "https://text.example.org/", ENGLISH)], gz=False)[0]
    (raw / "a.warc.wet.gz").write_bytes(gzip.compress(wet, mtime=0))
    whole = b"".join(warc_bytes([good_page(1), good_page(2)], gz=False))
    (raw / "whole.warc.gz").write_bytes(gzip.compress(whole, mtime=0))  # one gzip stream, not per record
    stats = run_ingest(WebIngestConfig(executor=ONE), {"raw": raw}, tmp_path / "out")
    docs = {d["metadata"]["url"]: d for d in iter_docs(tmp_path / "out")}
    assert docs["https://text.example.org/"]["text"] == ENGLISH and docs["https://text.example.org/"]["metadata"]["format"] == "wet"
    assert {"https://good.example.org/p1", "https://good.example.org/p2"} <= set(docs)
    assert stats["docs_out"] == 3


def crash_rank_1(monkeypatch):
    """Make datatrove task 1 fail on its first write (task 0 completes); returns the real DocsWriter.write."""
    real = DocsWriter.write

    def write(self, document, rank=0, **kw):
        if rank == 1:
            raise RuntimeError("simulated crash")
        return real(self, document, rank, **kw)
    monkeypatch.setattr(DocsWriter, "write", write)
    return real


def test_web_deterministic_and_resumes_after_crash(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in range(4):
        (raw / f"f{f}.warc.gz").write_bytes(b"".join(warc_bytes([good_page(10 * f + i) for i in range(3)])))
    cfg = WebIngestConfig(executor=ExecutorConfig(tasks=2, workers=1))
    run_ingest(cfg, {"raw": raw}, tmp_path / "a")

    real_write = crash_rank_1(monkeypatch)
    with pytest.raises(Exception):
        run_ingest(cfg, {"raw": raw}, tmp_path / "b")
    staging = tmp_path / ".b.partial"
    assert (staging / "logs" / "completions" / "00000").exists()
    assert not (staging / "logs" / "completions" / "00001").exists() and not (tmp_path / "b").exists()
    rank0 = staging / "docs" / "00000.jsonl.gz"
    before = rank0.stat().st_mtime_ns
    monkeypatch.setattr(DocsWriter, "write", real_write)
    run_ingest(cfg, {"raw": raw}, tmp_path / "b")
    assert (tmp_path / "b" / "docs" / "00000.jsonl.gz").stat().st_mtime_ns == before  # rank 0 was skipped

    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["docs"]  # no logs inside the tracked output
    assert (logs_path(tmp_path / "b") / "stats.json").exists()
    for sub in ("docs", "rejects"):
        a = {p.name: p.read_bytes() for p in (tmp_path / "a" / sub).glob("*.jsonl.gz")}
        b = {p.name: p.read_bytes() for p in (tmp_path / "b" / sub).glob("*.jsonl.gz")}
        assert a == b and (a or sub == "rejects")


# ----------------------------------------------------------------------------------------------- books

def gutenberg(body: str, title="A Test Book", author="Jane Doe", number=99999, language="English",
              encoding="UTF-8") -> str:
    return (f"The Project Gutenberg EBook of {title}, by {author}\r\n\r\nThis eBook is for the use of anyone anywhere "
            f"at no cost.\r\n\r\nTitle: {title}\r\n\r\nAuthor: {author}\r\n\r\nRelease Date: May 1, 2005 "
            f"[EBook #{number}]\r\n\r\nLanguage: {language}\r\n\r\nCharacter set encoding: {encoding}\r\n\r\n"
            f"*** START OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\n\r\n\r\nProduced by Volunteers\r\n\r\n"
            f"\r\n{body}\r\n\r\nEnd of the Project Gutenberg EBook of {title}, by {author}\r\n\r\n"
            f"*** END OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\n***** This file should be named "
            f"{number}.txt *****\r\n\r\n*** START: FULL LICENSE ***\r\n\r\nTHE FULL PROJECT GUTENBERG LICENSE\r\n"
            f"PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK\r\n")


def chapters(n: int, words: int = 400) -> str:
    return "\r\n\r\n".join(f"CHAPTER {i + 1}\r\n\r\n" + ("Þór sailed the sea. " if i == 0 else "") +
                           "It was a long and quiet day. " * (words // 7) for i in range(n))


def test_books_strip_decode_metadata_and_rejects(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pg1001.txt").write_bytes(gutenberg(chapters(3), "Latin Book", "Jóhann", 1001,
                                               encoding="ISO-646-US (US-ASCII)").encode("latin-1"))
    (raw / "pg1002.txt.gz").write_bytes(gzip.compress(gutenberg(chapters(2), "Utf Book", "Zoë", 1002).encode(), mtime=0))
    bad_utf8 = gutenberg(chapters(2) + " naïve café", "Broken", "X", 1003).encode()
    (raw / "pg1003.txt").write_bytes(bad_utf8.replace(b"quiet day", b"quiet \xff day", 1))
    (raw / "pg1004.txt").write_text("Just some text without any Gutenberg markers.\n" * 100)
    truncated = gzip.compress(gutenberg(chapters(2)).encode(), mtime=0)
    (raw / "pg1005.txt.gz").write_bytes(truncated[: len(truncated) // 2])
    (raw / "pg1008.txt").write_bytes(b"")
    (raw / "pg1006.txt").write_text(gutenberg("Tiny.", number=1006))
    (raw / "pg1007.txt").write_bytes(b"\x00\x01\x02" * 1000)
    (raw / "cover.jpg").write_bytes(b"\xff\xd8\xff")

    stats = run_ingest(BooksIngestConfig(executor=ONE), {"raw": raw}, tmp_path / "out")
    docs = {d["id"]: d for d in iter_docs(tmp_path / "out")}
    assert sorted(docs) == ["pg1001", "pg1002", "pg1003"]
    latin = docs["pg1001"]
    assert latin["text"].startswith("CHAPTER 1") and "Þór sailed" in latin["text"] and "\r" not in latin["text"]
    assert latin["metadata"].items() >= {"title": "Latin Book", "author": "Jóhann", "ebook_number": 1001,
                                      "language": "English", "lang": "en", "source": "books"}.items()
    assert docs["pg1002"]["metadata"]["author"] == "Zoë" and docs["pg1003"]["metadata"]["encoding"] == "utf-8-replaced"
    assert "naïve café" in docs["pg1003"]["text"]
    for d in docs.values():
        for phrase in ("Gutenberg", "LICENSE", "Produced by", "This file should be named"):
            assert phrase not in d["text"], (d["id"], phrase)
        assert d["text"].rstrip().endswith("quiet day.") or d["text"].rstrip().endswith("café")
    assert stats["dropped"] == {"no_start_marker": 1, "corrupt_gzip": 1, "too_short": 1, "binary": 1,
                                "not_text_file": 1, "empty": 1}
    assert stats["docs_in"] == 9


def test_books_split_into_chapter_parts(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pg7.txt").write_text(gutenberg(chapters(12, words=700), number=7))
    stats = run_ingest(BooksIngestConfig(executor=ONE, split_chars=12000), {"raw": raw}, tmp_path / "out")
    parts = list(iter_docs(tmp_path / "out"))
    assert len(parts) > 2 and all(len(p["text"]) <= 12000 for p in parts)
    assert [p["metadata"]["part"] for p in parts] == list(range(len(parts)))
    assert all(p["text"].startswith("CHAPTER") for p in parts)  # cuts at chapter headings
    assert stats["docs_in"] == 1 and stats["docs_out"] == len(parts)
    whole = "".join(p["text"] for p in parts)
    assert whole.count("CHAPTER") == 12


# ------------------------------------------------------------------------------------------------ code

MIT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\n"
PY = "import os\n\n\ndef main(argv):\n    \"\"\"Print the arguments.\"\"\"\n    for arg in argv:\n        print(arg)\n"


def test_code_tree_skips_and_starcoder_rules(tmp_path):
    raw = tmp_path / "raw"
    a, b = raw / "repo_a", raw / "repo_b"
    files = {
        a / "LICENSE": MIT, a / "src/main.py": PY, a / "src/lib.c": "int add(int a, int b) { return a + b; }\n",
        a / "run.sh": "#!/bin/sh\necho hello\n", a / "README.md": "# readme\n",
        a / "node_modules/dep/index.js": "module.exports = 1;\n", a / "build/gen.py": PY,
        a / "src/__pycache__/main.cpython-311.py": PY, a / ".git/hooks/pre-commit.sh": "exit 0\n",
        a / "static/app.min.js": "var a=1;" * 500 + "\n", a / "data.py": ("x = [" + "1, " * 60 + "]\n") * 50,
        a / "symbols.py": "#" * 80 + "\n" + "+-*/ = ()[]{}\n" * 40,
        a / "gen_pb2.py": "# -*- coding: utf-8 -*-\n# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + PY,
        a / "empty.py": "\n  \n", b / "tool.js": "function f(x) {\n  return x * 2;\n}\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (a / "blob.py").write_bytes(b"\x7fELF\x00\x00\x01" + bytes(100))
    (a / "legacy.c").write_bytes("/* caf\xe9 */ int x;\n".encode("latin-1"))
    (a / "huge.py").write_text("x = 1\n" * 50_000)
    os.symlink(a / "does-not-exist.py", a / "dangling.py")

    cfg = CodeIngestConfig(executor=ONE, max_file_bytes=100_000)
    stats = run_ingest(cfg, {"raw": raw}, tmp_path / "out")
    docs = {d["id"]: d["metadata"] for d in iter_docs(tmp_path / "out")}
    assert sorted(docs) == ["repo_a/run.sh", "repo_a/src/lib.c", "repo_a/src/main.py", "repo_b/tool.js"]
    assert docs["repo_a/src/main.py"] == {"source": "code", "repository": "repo_a", "path": "src/main.py",
                                          "language": "python", "license": "MIT"}
    assert docs["repo_a/src/lib.c"]["language"] == "c" and docs["repo_a/run.sh"]["language"] == "shell"
    assert docs["repo_b/tool.js"]["license"] is None and docs["repo_b/tool.js"]["language"] == "javascript"
    d = stats["dropped"]
    assert d["skipped_dir"] == 4 and d["binary"] == 1 and d["decode_error"] == 1 and d["too_large"] == 1
    assert d["long_line"] == 1 and d["mean_line_length"] == 1 and d["alnum_fraction"] == 1
    assert d["autogenerated"] == 1 and d["empty"] == 1 and d["symlink"] == 1  # dangling.py: never opened
    assert d["unsupported_extension"] == 2  # README.md, LICENSE
    assert stats["docs_in"] == stats["docs_out"] + sum(d.values())


def test_code_single_repository_layout(tmp_path):
    repo = tmp_path / "mylib"
    (repo / "pkg").mkdir(parents=True)
    (repo / "setup.py").write_text(PY)
    (repo / "pkg" / "core.py").write_text(PY)
    (repo / "LICENSE.txt").write_text("Apache License\nVersion 2.0, January 2004\n")
    run_ingest(CodeIngestConfig(executor=ONE), {"raw": repo}, tmp_path / "out")
    docs = {d["id"]: d["metadata"] for d in iter_docs(tmp_path / "out")}
    assert sorted(docs) == ["mylib/pkg/core.py", "mylib/setup.py"]
    assert {m["license"] for m in docs.values()} == {"Apache-2.0"}


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("cls,kwargs,message", [
    (CodeIngestConfig, {"languages": {"python": ["py"]}}, "must start with a dot"),
    (CodeIngestConfig, {"languages": {"c": [".h"], "c++": [".h"]}}, "listed for both"),
    (CodeIngestConfig, {"layout": "flat"}, "layout must be one of"),
    (WebIngestConfig, {"url_blocklist": ["https://x.com/a"]}, "not URLs"),
    (BooksIngestConfig, {"split_chars": 10, "min_chars": 100}, "split_chars"),
    (ExecutorConfig, {"tasks": 1, "workers": 2}, "must not exceed"),
])
def test_config_rejects_bad_values(cls, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        cls(**kwargs)


def test_shipped_params_parse_and_inherit_executor():
    from tasks.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    assert cfg.ingest.web.executor == cfg.ingest.books.executor == cfg.ingest.code.executor
    assert cfg.ingest.code.language_of(".PY") == "python" and cfg.ingest.code.language_of(".txt") is None
    assert json.dumps(cfg.ingest.model_dump())  # serialisable for MLflow params


def test_executor_kinds_from_config(tmp_path):
    from tasks.executor import make_executor
    from tasks.ingest.common import docs_writer

    steps = [docs_writer(tmp_path / "out")]
    local = make_executor(ExecutorConfig(tasks=3, workers=2), steps, tmp_path / "logs", "ingest-web")
    assert type(local).__name__ == "LocalPipelineExecutor" and local.world_size == 3 and local.workers == 2
    slurm = make_executor(ExecutorConfig(kind="slurm", tasks=8, workers=4), steps, tmp_path / "logs", "ingest-web")
    from datatrove.executor import SlurmPipelineExecutor

    assert isinstance(slurm, SlurmPipelineExecutor) and slurm.tasks == 8 and slurm.partition == "cpu"
    assert slurm.get_sbatch_args()["mem-per-cpu"] == "2048M"  # whole megabytes: sbatch refuses "0.5G"


def test_web_record_sharding_matches_single_task(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    members = warc_bytes([good_page(i) for i in range(7)] + [("warcinfo",)])
    bad = bytearray(members[3])
    bad[20:60] = b"\xff" * 40
    (raw / "a.warc.gz").write_bytes(b"".join(members[:3]) + bytes(bad) + b"".join(members[4:]))
    (raw / "b.txt").write_text("not a warc")
    one = run_ingest(WebIngestConfig(executor=ONE), {"raw": raw}, tmp_path / "one")
    three = run_ingest(WebIngestConfig(executor=ExecutorConfig(tasks=3, workers=1)), {"raw": raw}, tmp_path / "three")
    assert one == three and one["dropped"] == {"corrupt_gzip": 1, "not_warc_file": 1, "not_response": 1}
    ids = lambda out: sorted(d["id"] for d in iter_docs(out))  # noqa: E731
    assert ids(tmp_path / "one") == ids(tmp_path / "three") and len(ids(tmp_path / "one")) == 6
    assert len(list((tmp_path / "three" / "docs").glob("*.jsonl.gz"))) == 3  # the pages are spread over the tasks
