"""Documents between stages: datatrove's JSONL format ({"text", "id", "metadata"}), gzip-compressed.

A stage's kept documents live in `<output>/docs/*.jsonl.gz`, dropped ones with their reason in
`<output>/rejects/*.jsonl.gz`. Datatrove pipelines read and write these with JsonlReader/JsonlWriter;
the helpers below serve stages that are not datatrove pipelines (mix, shard, tokenizer, evaluate).
"""
from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger("tinyfoundry.docs")

DOCS = "docs"
REJECTS = "rejects"


def doc_files(folder: str | Path, sub: str = DOCS) -> list[Path]:
    """Sorted shard files of a stage output (`folder/docs/*.jsonl.gz`), or of a bare folder of shards."""
    folder = Path(folder)
    base = folder / sub if (folder / sub).is_dir() else folder
    return sorted(base.glob("*.jsonl.gz"))


def iter_docs(folder: str | Path, sub: str = DOCS) -> Iterator[dict]:
    for path in doc_files(folder, sub):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def document_problem(doc, require_source: bool = False) -> str | None:
    """Why a parsed line is not a usable document (a reason name used in metrics), or None."""
    if not isinstance(doc, dict):
        return "not_an_object"
    if not isinstance(doc.get("text"), str):
        return "missing_text"
    if not doc["text"].strip():
        return "empty_text"
    if not isinstance(doc.get("id"), (str, int)) or doc.get("id") == "":
        return "missing_id"
    if not isinstance(doc.get("metadata", {}), dict):
        return "bad_metadata"
    if require_source and not isinstance(doc.get("metadata", {}).get("source"), str):
        return "missing_source"
    return None


def scan_docs(folder: str | Path, sub: str = DOCS, skipped: Counter | None = None,
              require_source: bool = False) -> Iterator[tuple[str | None, object, str, str]]:
    """Every non-blank line of a stage output's shards, in order: (problem, document, where, raw line).

    A line that is not JSON has problem `malformed_json` and document None. A truncated or corrupt gzip
    file keeps the lines before the damage; the rest of that file is counted as `corrupt_file` and logged.
    """
    skipped = Counter() if skipped is None else skipped
    for path in doc_files(folder, sub):
        yield from scan_file(path, skipped, require_source)


def scan_file(path: Path, skipped: Counter, require_source: bool = False) -> Iterator[tuple[str | None, object, str, str]]:
    """`scan_docs` for one shard file."""
    line_no = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{line_no}"
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    yield "malformed_json", None, where, line.rstrip("\n")
                    continue
                yield document_problem(doc, require_source), doc, where, line.rstrip("\n")
    except (OSError, EOFError, zlib.error, UnicodeError) as e:
        skipped["corrupt_file"] += 1
        log.warning("%s is unreadable after line %d (%s); the rest of it is skipped", path, line_no, e)


def read_docs(folder: str | Path, sub: str = DOCS, skipped: Counter | None = None,
              require_source: bool = True) -> Iterator[dict]:
    """The usable documents of a stage output; bad lines and files are counted in `skipped[reason]` and logged."""
    skipped = Counter() if skipped is None else skipped
    for problem, doc, where, _ in scan_docs(folder, sub, skipped, require_source):
        if problem:
            skipped[problem] += 1
            log.debug("%s: %s, skipped", where, problem)
            continue
        yield doc


def write_docs(path: str | Path, docs: Iterable[dict]) -> int:
    """Write documents to one gzip JSONL shard (deterministic bytes: no gzip timestamp). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for doc in docs:
            gz.write((json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
            n += 1
    return n
