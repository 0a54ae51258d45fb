"""Documents between stages: datatrove's JSONL format ({"text", "id", "metadata"}), gzip-compressed.

A stage's kept documents live in `<output>/docs/*.jsonl.gz`, dropped ones with their reason in
`<output>/rejects/*.jsonl.gz`. Datatrove pipelines read and write these with JsonlReader/JsonlWriter;
the helpers below serve stages that are not datatrove pipelines (mix, shard, tokenizer, evaluate).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Iterator

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
