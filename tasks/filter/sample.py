"""Realistic filter inputs built straight from ../shared/data, shaped like the dedup stage's output.

The ingest and dedup stages are built in parallel; tests and benchmarks of this stage must not wait
for them, so this module turns the shared WARCs (warcio + trafilatura), Gutenberg books (gzip + header
strip) and Python standard-library files into `docs/*.jsonl.gz` shards with the metadata the contract
promises (`source`; web: `url`, `domain`, `lang`, `lang_score`; code: `language`).

    python -m tasks.filter.sample ../shared/data data/filter_sample [--web-per-file N] [--code-files N]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlsplit

from tasks.docs import write_docs
from tasks.ingest.books import parse_book

log = logging.getLogger("tinyfoundry.filter")


def _id(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def web_docs(warc: Path, limit: int | None = None, map_pages=map) -> list[dict]:
    """HTML responses of one WARC extracted with trafilatura; with `limit`, that many evenly spaced pages
    (the first N pages of a docs site are all index pages, not a fair sample). `map_pages` may be a pool's map."""
    from warcio.archiveiterator import ArchiveIterator

    pages = []
    with open(warc, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type != "response" or not record.http_headers:
                continue
            if "html" not in (record.http_headers.get_header("Content-Type") or "").lower():
                continue
            url = (record.rec_headers.get_header("WARC-Target-URI") or "").strip("<>")
            pages.append((url, record.content_stream().read()))
    if limit is not None and len(pages) > limit:
        pages = [pages[round(i * (len(pages) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else pages[:1]
    docs = []
    for (url, _), text in zip(pages, map_pages(_main_text, [body for _, body in pages])):
        if text:
            docs.append({"text": text, "id": _id("web", url), "metadata": {
                "source": "web", "url": url, "domain": urlsplit(url).hostname or "", "lang": "en",
                "lang_score": 1.0, "file": warc.name}})
    return docs


def _main_text(body: bytes) -> str | None:
    import trafilatura

    return trafilatura.extract(body.decode("utf-8", errors="replace"), favor_precision=True, include_comments=False)


def book_docs(books: Path, limit: int | None = None) -> list[dict]:
    """Gutenberg books decoded and stripped of their license header/footer exactly as the ingest stage does."""
    docs = []
    for path in sorted(books.glob("*.txt.gz"))[:limit]:
        parsed = parse_book(gzip.open(path, "rb").read())
        if isinstance(parsed, str):
            continue
        docs.append({"text": parsed[1].strip(), "id": _id("books", path.name),
                     "metadata": {"source": "books", "file": path.name}})
    return docs


def code_docs(limit: int | None = 300) -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[:limit]
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append({"text": text, "id": _id("code", path.name),
                         "metadata": {"source": "code", "language": "python", "path": path.name}})
    return docs


def build_sample(shared_data: Path, output: Path, web_per_file: int | None = None, books: int | None = None,
                 code_files: int | None = 300) -> dict[str, int]:
    """Write `output/docs/{web,books,code}.jsonl.gz`; returns document counts per source."""
    shared_data, output = Path(shared_data), Path(output)
    # trafilatura is most of the time: pages are extracted side by side, in fresh processes (the caller may hold
    # threads that a fork would copy mid-lock)
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=get_context("spawn")) as pool:
        extract = partial(pool.map, chunksize=4)
        warcs = sorted((shared_data / "web").glob("*.warc.gz"))
        web = [d for warc in warcs for d in web_docs(warc, web_per_file, extract)]
    counts = {"web": write_docs(output / "docs" / "web.jsonl.gz", web),
              "books": write_docs(output / "docs" / "books.jsonl.gz", book_docs(shared_data / "books", books)),
              "code": write_docs(output / "docs" / "code.jsonl.gz", code_docs(code_files))}
    log.info("sample input in %s: %s", output, counts)
    return counts


if __name__ == "__main__":
    logging.basicConfig(level="INFO")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shared_data", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--web-per-file", type=int, default=None)
    p.add_argument("--books", type=int, default=None)
    p.add_argument("--code-files", type=int, default=300)
    a = p.parse_args()
    print(build_sample(a.shared_data, a.output, a.web_per_file, a.books, a.code_files))
