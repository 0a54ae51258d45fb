"""Ingest throughput per source, one core (1 task, 1 worker), on ../shared/data and this Python's stdlib.

Prints documents/s and MB/s (input bytes on disk) for our stage next to a baseline, with ratios, per wall
second and per CPU second (the per-core figure that survives a shared, overloaded machine):
  web   — datatrove's stock WarcReader → Trafilatura (same timeout) → JsonlWriter (no rejects, no language ID;
          it also extracts non-200 HTML pages)
  books — read + gunzip + UTF-8/Latin-1 decode only (the I/O floor)
  code  — os.walk + read + UTF-8 decode only (the I/O floor)

    python benchmarks/ingest.py [--sources web books code] [--web GLOB] [--keep DIR] 2>/dev/null
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import resource
import shutil
import sys
import sysconfig
import tempfile
import time
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

def web_baseline(files: list[Path], out: Path) -> int:
    from datatrove.executor import LocalPipelineExecutor

    from tasks.config.ingest import WebIngestConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    link = out / "in"
    link.mkdir(parents=True)
    for f in files:
        os.symlink(f, link / f.name)
    timeout = WebIngestConfig().extract_timeout_s  # same limit as ours: a shorter one skips the heaviest pages
    LocalPipelineExecutor([WarcReader(str(link)), Trafilatura(timeout=timeout, deduplicate=False),
                           JsonlWriter(str(out / "docs"))], tasks=1, workers=1, logging_dir=str(out / "logs")).run()
    return sum(1 for p in (out / "docs").glob("*.gz") for _ in gzip.open(p, "rt"))


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
    parser.add_argument("--keep", type=Path, help="keep outputs in this folder instead of a temporary one")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    from datatrove.utils.logging import logger

    logger.remove()  # datatrove's per-step reports would bury the table

    from tasks.config.executor import ExecutorConfig
    from tasks.config.ingest import BooksIngestConfig, CodeIngestConfig, WebIngestConfig
    from tasks.ingest import run_ingest

    one = ExecutorConfig(tasks=1, workers=1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    rows = []
    if "web" in args.sources:
        files = sorted(Path(args.web).parent.glob(Path(args.web).name))
        if not files:
            sys.exit(f"no WARCs match {args.web}; is ../shared/data present?")
        link = work / "web-in"
        link.mkdir(parents=True, exist_ok=True)
        for f in files:
            (link / f.name).unlink(missing_ok=True)
            os.symlink(f, link / f.name)
        stats = {}
        ours = timed(lambda: stats.update(run_ingest(WebIngestConfig(executor=one), {"raw": link}, work / "web")) or stats["docs_out"])
        base = timed(lambda: web_baseline(files, work / "web-baseline"))
        rows.append(("web", input_bytes(files), stats["docs_in"], ours, base, "datatrove WarcReader+Trafilatura"))
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
          "Rates are per input record (same numerator for ours and the baseline).\n"
          "'/cpu-s' divides by CPU seconds (process + children), which is what one core delivers on an idle machine.\n")
    head = (f"{'source':<6} {'records':>7} {'kept':>6} {'MB in':>6} | {'ours s':>7} {'cpu s':>6} {'docs/s':>7} "
            f"{'docs/cpu-s':>10} {'MB/cpu-s':>8} | {'base s':>7} {'cpu s':>6} {'docs/cpu-s':>10} {'MB/cpu-s':>8} | "
            f"{'wall ratio':>10} {'cpu ratio':>9} | baseline")
    print(head)
    print("-" * len(head))
    for name, nbytes, records, (kept, wall, cpu), (_, bwall, bcpu), label in rows:
        mb = nbytes / 1e6
        print(f"{name:<6} {records:>7} {kept:>6} {mb:>6.1f} | {wall:>7.1f} {cpu:>6.1f} {records / wall:>7.1f} "
              f"{records / cpu:>10.1f} {mb / cpu:>8.2f} | {bwall:>7.1f} {bcpu:>6.2f} {records / bcpu:>10.1f} "
              f"{mb / bcpu:>8.2f} | {bwall / wall:>10.2f} {bcpu / cpu:>9.2f} | {label}")
    print("\nratio = baseline time / ours (>1: ours faster). records = WARC records / book files / code files seen.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
