"""Ingest throughput per source, one core (1 task, 1 worker), on ../shared/data and this Python's stdlib.

web — our stage (`run_ingest`, each `--extractors` value) against datatrove's stock WarcReader → Trafilatura
(same timeout) → JsonlWriter, on the same documents, each side in its own process pinned to one core. CPU time
counts the side's process and every descendant (datatrove's extraction sandbox, executor pools): this script
is their child subreaper, so orphaned grandchildren are reaped here and land in RUSAGE_CHILDREN too.
Same documents: datatrove's WarcReader keeps a record by its `WARC-Identified-Payload-Type` header, or when
that is absent by what libmagic guesses (it read 1 of 242 pages of one docs crawl), and it also extracts
non-200 pages. So both sides read copies of the WARCs in which every response record carries that header
(its HTTP Content-Type, as Common Crawl writes it) and non-200 HTML responses are left out; every other
record is copied byte for byte. Rates are HTML documents extracted per CPU second (the same number for both
sides); text similarity compares the two outputs per document (word 4-gram F1, benchmarks/extraction.py).
books — read + gunzip + UTF-8/Latin-1 decode only (the I/O floor); code — os.walk + read + decode only.

    python benchmarks/ingest.py [--sources web books code] [--web GLOB] [--extractors ...] [--keep DIR] 2>/dev/null
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data"))
STDLIB_SKIP = ["test", "tests", "idlelib", "lib-dynload", "ensurepip", "site-packages", "__pycache__", "lib2to3"]


def cpu_seconds() -> float:
    """User+system CPU of this process and its reaped children (datatrove's extraction sandbox included)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), cpu_seconds()
    docs = fn()
    return docs, time.perf_counter() - wall, cpu_seconds() - cpu


def input_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths)


# ------------------------------------------------------------------------------------------- baselines

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants of our children are re-parented to us (not init), so their CPU time is counted."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def run_side(args: list[str], core: int) -> tuple[float, float]:
    """(wall s, CPU s) of `python benchmarks/ingest.py <args>` and all its descendants, pinned to one core."""
    cpu, wall = children_cpu(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    if proc.wait():
        sys.exit(f"benchmark side {args[:2]} failed with exit code {proc.returncode}")
    while True:  # reap orphans that were re-parented to us
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return time.perf_counter() - wall, children_cpu() - cpu


def matched_copies(files: list[Path], out: Path) -> dict:
    """Copies of per-record-gzip (or plain) WARCs that datatrove's WarcReader and ours read the same way."""
    from warcio.archiveiterator import ArchiveIterator

    from tasks.ingest.web import HTML_TYPES

    out.mkdir(parents=True, exist_ok=True)
    counts = Counter()
    for path in files:
        with open(path, "rb") as f, open(path, "rb") as raw, open(out / path.name, "wb") as dst:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            it = ArchiveIterator(f, check_digests=False)
            for record in it:
                mime = None
                if record.rec_type == "response" and record.http_headers is not None:
                    mime = (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
                    mime = mime or "application/octet-stream"
                it.read_to_end(record)
                raw.seek(it.get_record_offset())
                member = raw.read(it.get_record_length())
                if mime in HTML_TYPES and record.http_headers.get_statuscode() != "200":
                    counts["non-200 html left out"] += 1  # datatrove would extract it, ours rejects it
                    continue
                counts["records"] += 1
                if mime:
                    counts["html responses" if mime in HTML_TYPES else "other responses"] += 1
                    body = gzip.decompress(member) if gzipped else member
                    version, rest = body.split(b"\n", 1)
                    body = version + b"\nWARC-Identified-Payload-Type: " + mime.encode() + b"\r\n" + rest
                    member = gzip.compress(body, mtime=0) if gzipped else body
                dst.write(member)
    return dict(counts)


def run_datatrove(data: Path, out: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    from tasks.config.ingest import WebIngestConfig

    timeout = WebIngestConfig().extract_timeout_s  # same limit as ours: a shorter one skips the heaviest pages
    LocalPipelineExecutor([WarcReader(str(data)), Trafilatura(timeout=timeout, deduplicate=False),
                           JsonlWriter(str(out / "docs"))], tasks=1, workers=1, logging_dir=str(out / "logs")).run()


def run_ours(data: Path, out: Path, extractor: str) -> None:
    from tasks.config.executor import ExecutorConfig
    from tasks.config.ingest import WebIngestConfig
    from tasks.ingest import run_ingest

    cfg = WebIngestConfig(executor=ExecutorConfig(tasks=1, workers=1), extractor=extractor)
    stats = run_ingest(cfg, {"raw": data}, out)
    (out.parent / f"{out.name}.stats.json").write_text(json.dumps(stats))


def read_texts(folder: Path) -> dict[str, str]:
    return {doc["id"]: doc["text"] for path in sorted(folder.glob("*.jsonl.gz"))
            for doc in map(json.loads, gzip.open(path, "rt", encoding="utf-8"))}


def extracted_texts(out: Path) -> dict[str, str]:
    """Every page our stage extracted text for: kept documents and content rejects (they keep their text)."""
    texts = read_texts(out / "docs")
    texts.update({k: v for k, v in read_texts(out / "rejects").items() if v})
    return texts


def similarity(ours: dict[str, str], theirs: dict[str, str]) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from extraction import metrics, page_scores

    both = sorted(ours.keys() & theirs.keys())
    if not both:
        return "no documents in common"
    m = metrics([page_scores(theirs[i], ours[i]) for i in both])
    words = sum(len(ours[i].split()) for i in both) / max(1, sum(len(theirs[i].split()) for i in both))
    return (f"{len(both)} documents extracted by both; word 4-gram F1 vs datatrove's text {m['f1']:.3f} "
            f"(P {m['precision']:.3f}, R {m['recall']:.3f}); words ours/datatrove {words:.2f}; "
            f"only ours {len(ours.keys() - theirs.keys())}, only datatrove {len(theirs.keys() - ours.keys())}")


def web_rows(files: list[Path], work: Path, extractors: list[str]) -> tuple[list, list[str]]:
    core = min(os.sched_getaffinity(0))
    data = work / "web-matched"
    counts = matched_copies(files, data)
    notes = [f"matched WARC copies: {counts}"]
    base_out = work / "web-datatrove"
    base = run_side(["--side", "datatrove", str(data), str(base_out)], core)
    theirs = read_texts(base_out / "docs")
    rows = []
    for extractor in extractors:
        out = work / f"web-{extractor}"
        ours = run_side(["--side", extractor, str(data), str(out)], core)
        stats = json.loads((work / f"{out.name}.stats.json").read_text())
        pages = counts["html responses"]
        rows.append((f"web/{extractor}", input_bytes(data.iterdir()), pages, (stats["docs_out"], *ours), (None, *base),
                     "datatrove WarcReader+Trafilatura"))
        notes.append(f"{extractor}: {similarity(extracted_texts(out), theirs)}")
    notes.append(f"datatrove extracted {len(theirs)} of {counts['html responses']} HTML pages (it drops empty results)")
    return rows, notes


def books_baseline(files: list[Path]) -> int:
    for f in files:
        raw = gzip.decompress(f.read_bytes())
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raw.decode("latin-1")
    return len(files)


def code_baseline(root: Path, exts: set[str]) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP)
        for name in sorted(filenames):
            if Path(name).suffix in exts:
                try:
                    (Path(dirpath) / name).read_bytes().decode("utf-8")
                    n += 1
                except (UnicodeDecodeError, OSError):
                    pass
    return n


# --------------------------------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["web", "books", "code"], choices=["web", "books", "code"])
    parser.add_argument("--web", default=str(SHARED / "web" / "*.warc.gz"), help="WARC glob (default: all shared WARCs)")
    parser.add_argument("--extractors", nargs="+", default=["resiliparse+trafilatura", "trafilatura"],
                        help="ingest.web.extractor values to run ours with (one row each)")
    parser.add_argument("--keep", type=Path, help="keep outputs in this folder instead of a temporary one")
    parser.add_argument("--side", nargs=3, metavar=("WHO", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side of the web comparison, in its own pinned process (see run_side)
        logging.disable(logging.INFO)
        from datatrove.utils.logging import logger

        logger.remove()
        who, data, out = args.side
        run_datatrove(Path(data), Path(out)) if who == "datatrove" else run_ours(Path(data), Path(out), who)
        return 0
    logging.disable(logging.INFO)
    from datatrove.utils.logging import logger

    logger.remove()  # datatrove's per-step reports would bury the table

    from tasks.config.executor import ExecutorConfig
    from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
    from tasks.ingest import run_ingest

    one = ExecutorConfig(tasks=1, workers=1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    rows = []
    notes = []
    if "web" in args.sources:
        files = sorted(Path(args.web).parent.glob(Path(args.web).name))
        if not files:
            sys.exit(f"no WARCs match {args.web}; is ../shared/data present?")
        become_subreaper()
        web, notes = web_rows(files, work, args.extractors)
        rows += web
    if "books" in args.sources:
        files = sorted((SHARED / "books").glob("*.txt.gz"))
        stats = {}
        ours = timed(lambda: stats.update(run_ingest(BooksIngestConfig(executor=one), {"raw": SHARED / "books"},
                                                     work / "books")) or stats["docs_out"])
        base = timed(lambda: books_baseline(files))
        rows.append(("books", input_bytes(files), stats["docs_in"], ours, base, "gunzip+decode only"))
    if "code" in args.sources:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        cfg = CodeIngestConfig(executor=one, layout="single",
                               skip_dirs=sorted(set(CodeIngestConfig().skip_dirs) | set(STDLIB_SKIP)))
        exts = {e for v in cfg.languages.values() for e in v}
        stats = {}
        ours = timed(lambda: stats.update(run_ingest(cfg, {"raw": stdlib}, work / "code")) or stats["docs_out"])
        base = timed(lambda: code_baseline(stdlib, exts))
        size = sum(p.stat().st_size for p in stdlib.rglob("*") if p.is_file() and p.suffix in exts
                   and not set(p.relative_to(stdlib).parts[:-1]) & set(cfg.skip_dirs))
        rows.append(("code", size, stats["docs_in"], ours, base, "os.walk+read+decode only"))

    print(f"\ningest throughput, 1 task / 1 worker; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
          "Rates are per HTML page extracted (web) or per input file (books, code): the same numerator for ours "
          "and the baseline.\n"
          "'/cpu-s' divides by CPU seconds (process + children), which is what one core delivers on an idle machine.\n")
    head = (f"{'source':<30} {'docs':>7} {'kept':>6} {'MB in':>6} | {'ours s':>7} {'cpu s':>6} {'docs/s':>7} "
            f"{'docs/cpu-s':>10} {'MB/cpu-s':>8} | {'base s':>7} {'cpu s':>6} {'docs/cpu-s':>10} {'MB/cpu-s':>8} | "
            f"{'wall ratio':>10} {'cpu ratio':>9} | baseline")
    print(head)
    print("-" * len(head))
    for name, nbytes, records, (kept, wall, cpu), (_, bwall, bcpu), label in rows:
        mb = nbytes / 1e6
        print(f"{name:<30} {records:>7} {kept:>6} {mb:>6.1f} | {wall:>7.1f} {cpu:>6.1f} {records / wall:>7.1f} "
              f"{records / cpu:>10.1f} {mb / cpu:>8.2f} | {bwall:>7.1f} {bcpu:>6.2f} {records / bcpu:>10.1f} "
              f"{mb / bcpu:>8.2f} | {bwall / wall:>10.2f} {bcpu / cpu:>9.2f} | {label}")
    print("\nratio = baseline time / ours (>1: ours faster). docs = HTML pages both sides extract / book files / "
          "code files seen; kept = documents ours wrote.")
    for note in notes:
        print(note)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
