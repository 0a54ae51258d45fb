"""Realistic stage inputs for the tokenizer/mix/shard tests and benchmarks: real text from ../shared/data
(Gutenberg books, HTML pages of the documentation WARCs with tags stripped) and Python stdlib source for
code, written as datatrove JSONL shards like data/filter/docs (tasks/docs.write_docs)."""
from __future__ import annotations

import gzip
import re
import sysconfig
from pathlib import Path

from tasks.docs import write_docs

WEB_WARCS = ("debian-reference.warc.gz", "dolma-sample-0000.warc.gz", "python-docs-3.11.warc.gz")


def book_docs(shared: Path, max_bytes: int) -> list[dict]:
    docs, total = [], 0
    for path in sorted((shared / "books").glob("*.txt.gz")):
        raw = gzip.decompress(path.read_bytes())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        text = text.replace("\r\n", "\n")
        docs.append({"text": text, "id": f"books/{path.name}", "metadata": {"source": "books"}})
        total += len(raw)
        if total >= max_bytes:
            break
    return docs


def web_docs(shared: Path, max_bytes: int) -> list[dict]:
    import lxml.html
    from warcio.archiveiterator import ArchiveIterator

    docs, total = [], 0
    for name in WEB_WARCS:
        with open(shared / "web" / name, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type != "response" or total >= max_bytes:
                    continue
                body = rec.content_stream().read()
                if b"<html" not in body[:2000].lower():
                    continue
                try:
                    text = lxml.html.fromstring(body).text_content()
                except Exception:  # malformed page: not needed for a test corpus
                    continue
                text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
                if len(text) < 200:
                    continue
                uri = rec.rec_headers.get_header("WARC-Target-URI")
                docs.append({"text": text, "id": f"web/{uri}", "metadata": {"source": "web", "url": uri}})
                total += len(text.encode())
    return docs


def code_docs(max_bytes: int) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("[a-z]*/*.py")):
        if "test" in path.parts or "site-packages" in path.parts or total >= max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            rel = path.relative_to(stdlib).as_posix()
            docs.append({"text": text, "id": f"code/{rel}", "metadata": {"source": "code", "path": rel}})
            total += len(text.encode())
    return docs


def make_corpus(folder: Path, shared: Path, web_bytes: int = 600_000, books_bytes: int = 1_500_000,
                code_bytes: int = 900_000, files: int = 2) -> Path:
    """A data/filter-like folder (`folder/docs/*.jsonl.gz`) with the three sources, split over `files` shards."""
    docs = web_docs(shared, web_bytes) + book_docs(shared, books_bytes) + code_docs(code_bytes)
    for i in range(files):
        write_docs(folder / "docs" / f"{i:05d}.jsonl.gz", docs[i::files])
    return folder


def small_tokenizer_config(**overrides):
    from tasks.config.tokenizer import TokenizerConfig

    return TokenizerConfig(**{"vocab_size": 1024, "sample_bytes": 1_000_000, "eval_bytes": 200_000,
                              "hf_check_bytes": 100_000, **overrides})


def build_pipeline(root: Path, shared: Path, mix_overrides: dict | None = None, shard_overrides: dict | None = None):
    """corpus → tokenizer → mix → shards under `root`; returns (paths dict, stats dict)."""
    from tasks.config.mix import MixConfig
    from tasks.config.shard import ShardConfig
    from tasks.mix import run_mix
    from tasks.shard import run_shard
    from tasks.tokenizer import run_tokenizer

    p = {k: root / k for k in ("filter", "tokenizer", "mix", "shards")}
    make_corpus(p["filter"], shared)
    stats = {"tokenizer": run_tokenizer(small_tokenizer_config(), {"docs": p["filter"]}, p["tokenizer"])}
    stats["mix"] = run_mix(MixConfig(**{"val_fraction": 0.1, **(mix_overrides or {})}),
                           {"docs": p["filter"], "tokenizer": p["tokenizer"]}, p["mix"])
    stats["shard"] = run_shard(ShardConfig(**{"shard_tokens": 300_000, **(shard_overrides or {})}),
                               {"docs": p["mix"], "tokenizer": p["tokenizer"]}, p["shards"])
    return p, stats


def corrupt_docs_folder(folder: Path, good: list[dict]) -> Path:
    """A docs folder with good documents plus a bad JSON line, a text-less document, a source-less one
    and a truncated gzip file."""
    import json

    write_docs(folder / "docs" / "00000.jsonl.gz", good)
    bad = [{"text": "", "id": "empty", "metadata": {"source": "web"}},
           {"text": "no source here", "id": "nosrc", "metadata": {}}]
    write_docs(folder / "docs" / "00001.jsonl.gz", bad)
    with gzip.open(folder / "docs" / "00002.jsonl.gz", "wt") as f:
        f.write('{"text": "broken json\n')
        f.write(json.dumps({"text": "a fine doc after a broken line " * 20, "id": "after-broken",
                            "metadata": {"source": "web"}}) + "\n")
    data = gzip.compress(("\n".join(json.dumps({"text": "truncated doc " * 50, "id": f"t{i}",
                                                 "metadata": {"source": "books"}}) for i in range(200))).encode())
    (folder / "docs" / "00003.jsonl.gz").write_bytes(data[: len(data) // 2])
    return folder
