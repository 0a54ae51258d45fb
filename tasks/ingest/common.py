"""Pieces every ingest source shares: reject routing, deterministic JSONL writers, executors, stats.

A source's pipeline is datatrove steps: a reader that turns raw files into `Document`s (and rejects
what it cannot use, with a reason), filters, and a `DocsWriter`. Each step that drops documents writes
them to `<out>/rejects/<step>_<rank>.jsonl.gz` with `metadata.reject_reason`; the stage's stats are
then counted from the written files, so they are the same whether a run was fresh or resumed.
"""
from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
from fsspec.compression import compr, register_compression

from tasks.docs import DOCS, REJECTS

log = logging.getLogger("tinyfoundry.ingest")

DETERMINISTIC_GZIP = "gzip-mtime0"


def _gzip_mtime0(f, mode="rb", **kwargs):
    # fsspec's "gzip" stamps the current time and file name into the header; outputs must be byte-identical
    kwargs.setdefault("compresslevel", 6)  # zlib's default: ~2x faster than GzipFile's 9, a few % larger
    return gzip.GzipFile(fileobj=f, mode=mode, mtime=0, filename="", **kwargs)


if DETERMINISTIC_GZIP not in compr:  # registered on import, so Slurm/Ray workers unpickling these steps get it too
    register_compression(DETERMINISTIC_GZIP, _gzip_mtime0, [])


class DocsWriter(JsonlWriter):
    """JsonlWriter with byte-identical gzip output and the pipeline's {"text","id","metadata"} records."""

    name = "🐿 Jsonl (deterministic)"

    def __init__(self, output_folder: str | Path, output_filename: str = "${rank}.jsonl.gz"):
        super().__init__(str(output_folder), output_filename=output_filename, compression=DETERMINISTIC_GZIP)

    def _default_adapter(self, document: Document) -> dict:
        """Always exactly {"text", "id", "metadata"} (datatrove's default adapter drops empty text)."""
        metadata = dict(document.metadata)
        if "filter_reason" in metadata:  # datatrove's BaseFilter names it so; the pipeline contract says reject_reason
            metadata.setdefault("reject_reason", metadata.pop("filter_reason"))
        return {"text": document.text or "", "id": document.id, "metadata": metadata}


def docs_writer(output: Path) -> DocsWriter:
    return DocsWriter(output / DOCS)


def rejects_writer(output: Path, step: str) -> DocsWriter:
    """One rejects file per (step, rank): several steps drop documents within the same task."""
    return DocsWriter(output / REJECTS, output_filename=f"{step}_${{rank}}.jsonl.gz")


def reject_doc(doc_id: str, reason: str, text: str = "", **metadata) -> Document:
    return Document(text=text, id=doc_id, metadata={**metadata, "reject_reason": reason})


class RejectingReader(BaseDiskReader):
    """A datatrove disk reader whose `read_file` may also call `self.reject(...)` for records it cannot use.

    Subclasses implement `read_file` and must not raise: a bad file or record becomes a reject with a
    reason, and the records before and after it are still read.
    """

    def __init__(self, data_folder, rejects: DocsWriter, glob_pattern: str | None = None):
        super().__init__(data_folder, glob_pattern=glob_pattern, add_file_path=False, file_progress=True)
        self.rejects = rejects
        self._writer = None
        self._rank = 0

    def reject(self, doc_id: str, reason: str, text: str = "", **metadata) -> None:
        self.stat_update(f"dropped_{reason}")
        self._writer.write(reject_doc(doc_id, reason, text, **metadata), self._rank)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.rejects as writer:
            self._writer, self._rank = writer, rank
            yield from super().run(data, rank, world_size)


class RejectingFilter(BaseFilter):
    """A datatrove filter whose drops go to the stage's rejects (reason in `metadata.reject_reason`)."""

    def __init__(self, output: Path, step: str):
        super().__init__(exclusion_writer=rejects_writer(output, step))


# ------------------------------------------------------------------------------------------------- stats

def iter_jsonl_gz(folder: Path) -> Iterator[dict]:
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def count_outputs(output: Path) -> dict:
    """`docs_in`, `docs_out`, `bytes_out` (UTF-8 bytes of kept text), `dropped: {reason: count}`.

    Counted from the written shards, so a resumed run reports the same as a fresh one. A document split into
    parts (books) counts once in `docs_in` (its part 0).
    """
    docs_out = bytes_out = parents = 0
    for doc in iter_jsonl_gz(output / DOCS):
        docs_out += 1
        bytes_out += len(doc["text"].encode("utf-8"))
        parents += doc["metadata"].get("part", 0) == 0
    dropped = Counter(doc["metadata"].get("reject_reason", "unknown") for doc in iter_jsonl_gz(output / REJECTS))
    return {"docs_in": parents + sum(dropped.values()), "docs_out": docs_out, "bytes_out": bytes_out,
            "dropped": dict(sorted(dropped.items()))}


def split_input(raw: Path) -> tuple[str, str | None]:
    """(data folder, glob) for datatrove readers: a folder (read recursively), one file, or a glob like `dir/*.warc.gz`."""
    text = str(raw)
    if any(c in text for c in "*?["):
        return str(raw.parent), raw.name
    if raw.is_file():
        return str(raw.parent), raw.name
    return text, None
