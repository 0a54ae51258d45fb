"""HTML → main-text extraction quality and speed on ../shared/data/extraction (120 news/blog pages, human truth).

Metric (the benchmark's, as in its evaluate.py): per page, word 4-gram shingles (`\\w+`, Unicode) counted with
multiplicity; tp = Σ min(true, pred), fp = excess predicted, fn = missing; (tp, fp, fn) normalised to sum 1;
precision = mean over pages with tp + fp > 0, recall = mean over pages with tp + fn > 0 (a page where both are
exactly equal scores 1), F1 = harmonic mean of the two means. `empty` counts pages with no extracted text.

Pages are split by sorted id: even positions = `tune` (the only pages the skip rules in tasks/ingest/extract.py
were chosen on), odd positions = `held-out`. CPU ms/page: process CPU time of the extraction loop in a
subprocess pinned to one core, after one warm-up page; pages are read and decoded before timing.

Candidates run in this project's venv (`ours:*`, tasks/ingest/extract.py, i.e. trafilatura 1.11 and
resiliparse as pinned) or in a separate venv with other extractors (trafilatura 2 would clash with the pinned
1.11): create it once with `--setup` (benchmarks/extraction-requirements.txt; pip, ~30 s with a warm cache).

    python benchmarks/extraction.py [--setup] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data"))
EXTRA_VENV = ROOT / ".venv-extraction"
REQUIREMENTS = Path(__file__).with_name("extraction-requirements.txt")
BASELINE = "ours:trafilatura"  # the extractor ingest@web used before (trafilatura 1.11, favour_precision)

# name -> (venv, description); "main" = this interpreter, "extra" = EXTRA_VENV
CANDIDATES = {
    "ours:resiliparse+trafilatura": ("main", "default: resiliparse, trafilatura 1.11 where it keeps ~nothing"),
    "ours:resiliparse": ("main", "resiliparse 2.0.1 main content + skip rules (tasks/ingest/extract.py)"),
    "ours:trafilatura": ("main", "trafilatura 1.11, favor_precision (previous default; datatrove's call)"),
    "ours:trafilatura-no-fallback": ("main", "trafilatura 1.11, favor_precision, no_fallback"),
    "trafilatura2": ("extra", "trafilatura 2.3.1 defaults"),
    "trafilatura2-precision": ("extra", "trafilatura 2.3.1 favor_precision"),
    "trafilatura2-fast": ("extra", "trafilatura 2.3.1 fast (no fallback extractors)"),
    "resiliparse-plain": ("extra", "resiliparse 2.0.1 main_content=True, library defaults"),
    "readability-lxml": ("extra", "readability-lxml 0.9 summary → html-text"),
    "goose3": ("extra", "goose3 3.1.22 cleaned_text"),
    "boilerpy3": ("extra", "boilerpy3 1.0.7 ArticleExtractor"),
    "justext": ("extra", "jusText 3.0.2, English stop list"),
    "inscriptis": ("extra", "inscriptis 2.7.6 (all text, layout-aware)"),
    "html-text": ("extra", "html-text 0.7.1: all visible text (no-extraction baseline)"),
}
NOT_INSTALLABLE = {"rs-trafilatura 0.1.1": "no wheel for this platform; its sdist build needs crates.io (unreachable)"}


# ------------------------------------------------------------------------------------------------- metric

TOKEN = re.compile(r"\w+")


def shingles(text: str, n: int = 4) -> Counter:
    words = TOKEN.findall(text or "")
    return Counter(tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1)) if words[i:i + n])


def page_scores(true: str, pred: str) -> tuple[float, float, float]:
    """(tp, fp, fn) over word 4-gram shingles, normalised to sum 1 so that long pages do not weigh more."""
    t, p = shingles(true), shingles(pred)
    tp = sum((t & p).values())
    fp, fn = sum(p.values()) - tp, sum(t.values()) - tp
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def metrics(scores: list[tuple[float, float, float]]) -> dict:
    def ratio(tp, other, fp, fn):
        return 1.0 if fp == fn == 0 else tp / (tp + other)

    precision = statistics.mean(ratio(tp, fp, fp, fn) for tp, fp, fn in scores if tp + fp > 0)
    recall = statistics.mean(ratio(tp, fn, fp, fn) for tp, fp, fn in scores if tp + fn > 0)
    return {"f1": 2 * precision * recall / (precision + recall), "precision": precision, "recall": recall}


# ------------------------------------------------------------------------------------------------- worker

def load_pages(folder: Path) -> tuple[dict, dict]:
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = {i: gzip.decompress((folder / "html" / f"{i}.html.gz").read_bytes()).decode("utf-8") for i in sorted(truth)}
    return truth, pages


def make_candidate(name: str):
    """html -> text for one candidate; imports happen here, inside the candidate's own venv."""
    if name.startswith("ours:"):
        sys.path.insert(0, str(ROOT))
        from tasks.ingest.extract import TrafilaturaExtractor, make_extractor

        kind = name.removeprefix("ours:")
        extractor = (TrafilaturaExtractor(no_fallback=True) if kind == "trafilatura-no-fallback"
                     else make_extractor(kind))
        return lambda html: extractor(html)[0]
    if name.startswith("trafilatura2"):
        import trafilatura

        options = {"trafilatura2": {}, "trafilatura2-precision": {"favor_precision": True},
                   "trafilatura2-fast": {"fast": True}}[name]
        return lambda html: trafilatura.extract(html, include_comments=False, deduplicate=False, **options) or ""
    if name == "resiliparse-plain":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        return lambda html: extract_plain_text(HTMLTree.parse(html), main_content=True)
    if name == "readability-lxml":
        import html_text
        from readability import Document

        return lambda html: html_text.extract_text(Document(html).summary(html_partial=True))
    if name == "goose3":
        from goose3 import Goose

        goose = Goose()
        return lambda html: goose.extract(raw_html=html).cleaned_text
    if name == "boilerpy3":
        from boilerpy3 import extractors

        article = extractors.ArticleExtractor(raise_on_failure=False)
        return lambda html: article.get_content(html)
    if name == "justext":
        import justext

        stoplist = justext.get_stoplist("English")
        return lambda html: "\n".join(p.text for p in justext.justext(html.encode("utf-8"), stoplist)
                                      if not p.is_boilerplate)
    if name == "inscriptis":
        import inscriptis

        return inscriptis.get_text
    if name == "html-text":
        import html_text

        return html_text.extract_text
    raise SystemExit(f"unknown candidate {name}")


def worker(name: str, out: Path) -> None:
    import logging

    logging.disable(logging.WARNING)  # goose3 and trafilatura log per page
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    _, pages = load_pages(SHARED / "extraction")
    extract = make_candidate(name)
    extract(next(iter(pages.values())))  # warm-up: imports, lazy tables
    texts, errors = {}, 0
    start = time.process_time()
    for page_id, html in pages.items():
        try:
            texts[page_id] = extract(html) or ""
        except Exception:  # noqa: BLE001 - a failing page scores as empty output, counted
            texts[page_id], errors = "", errors + 1
    cpu = time.process_time() - start
    out.write_text(json.dumps({"texts": texts, "cpu_s": cpu, "errors": errors}))


# --------------------------------------------------------------------------------------------------- main

def python_for(venv: str) -> Path | None:
    if venv == "main":
        return Path(sys.executable)
    python = EXTRA_VENV / "bin" / "python"
    return python if python.exists() else None


def setup() -> None:
    if not (EXTRA_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(EXTRA_VENV)], check=True)
    pip = [str(EXTRA_VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)  # old pip fails on lxml[html_clean] extras twice named
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help=f"create {EXTRA_VENV.name} for the other extractors first")
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="run only these candidates")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out)
        return 0
    if not (SHARED / "extraction" / "ground-truth.json").exists():
        sys.exit(f"no extraction benchmark at {SHARED / 'extraction'}; is ../shared/data present?")
    if args.setup:
        setup()
    truth, _ = load_pages(SHARED / "extraction")
    ids = sorted(truth)
    splits = {"all": ids, "tune": ids[0::2], "held-out": ids[1::2]}

    rows, skipped = [], []
    for name in args.only or CANDIDATES:
        venv, description = CANDIDATES[name]
        python = python_for(venv)
        if python is None:
            skipped.append(f"{name}: needs {EXTRA_VENV.name} (run with --setup)")
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            run = subprocess.run([str(python), __file__, "--worker", name, "--out", out.name],
                                 capture_output=True, text=True)
            if run.returncode:
                skipped.append(f"{name}: failed: {run.stderr.strip().splitlines()[-1:]}")
                continue
            result = json.loads(Path(out.name).read_text())
        texts = result["texts"]
        scores = {i: page_scores(truth[i]["articleBody"], texts[i]) for i in ids}
        by_split = {s: metrics([scores[i] for i in members]) for s, members in splits.items()}
        empty = sum(not texts[i].strip() for i in ids)
        rows.append((name, description, by_split, 1000 * result["cpu_s"] / len(ids), empty, result["errors"]))

    base_ms = next((ms for name, _, _, ms, _, _ in rows if name == BASELINE), None)
    print(f"\nextraction on {len(ids)} pages of ../shared/data/extraction (tune {len(splits['tune'])} / held-out "
          f"{len(splits['held-out'])}); load average {os.getloadavg()[0]:.1f}; one core per candidate.\n")
    head = (f"{'extractor':<30} {'F1':>6} {'P':>6} {'R':>6} | {'F1 tune':>7} {'F1 held':>7} | {'ms/page':>7} "
            f"{'speed×':>6} {'empty':>5} | description")
    print(head)
    print("-" * len(head))
    for name, description, m, ms, empty, errors in rows:
        speed = f"{base_ms / ms:>6.1f}" if base_ms else f"{'-':>6}"
        flag = " *" if m["all"]["f1"] >= 0.95 else "  "
        print(f"{name:<30} {m['all']['f1']:>6.3f} {m['all']['precision']:>6.3f} {m['all']['recall']:>6.3f} | "
              f"{m['tune']['f1']:>7.3f} {m['held-out']['f1']:>7.3f} | {ms:>7.1f} {speed} {empty:>5}{flag}| "
              f"{description}{f' ({errors} errors)' if errors else ''}")
    print(f"\n* F1 >= 0.95 on all pages. speed× = CPU time of {BASELINE} / this extractor (>1: faster).")
    for name, why in NOT_INSTALLABLE.items():
        print(f"not run: {name}: {why}")
    for line in skipped:
        print(f"not run: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
