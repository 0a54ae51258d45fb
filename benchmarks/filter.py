"""Filter stage throughput, one process (= per core): ours vs datatrove's defaults, side by side.

    python benchmarks/filter.py [--input data/dedup] [--web 300] [--books 4] [--code 100]
    python benchmarks/filter.py --generalisation [--work DIR]   # issue 13: benchmarks/filter_generalisation.py

Rows: the web heuristics (Gopher quality + repetition, C4, FineWeb) with our regex word splitting vs
datatrove's default spaCy tokenizer; the book heuristics judged on the first 100k characters vs the whole
book; the code checks; classifier scoring with our chunked batched scorer vs datatrove's
FastTextClassifierFilter on the whole document. Without --input, the documents are built from
../shared/data (tasks.filter.sample) and a throwaway classifier is trained on them.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from datatrove.data import Document

from tasks.config.filter import ClassifierConfig, FilterConfig, SourceFilterConfig
from tasks.docs import iter_docs


def _docs(rows: list[dict]) -> list[Document]:
    return [Document(text=r["text"], id=r["id"], metadata=dict(r["metadata"])) for r in rows]


def _time_steps(steps, rows: list[dict]) -> tuple[float, int]:
    """Seconds to push `rows` through filter steps in-process (no writers), and characters processed."""
    docs = _docs(rows)
    start = time.perf_counter()
    for doc in docs:
        for step in steps:
            if step.filter(doc) is not True:
                break
    return time.perf_counter() - start, sum(len(r["text"]) for r in rows)


def _heuristics(cfg: FilterConfig, source: str, tmp: Path):
    from tasks.filter.heuristics import heuristic_steps

    only = cfg.model_copy(update={s: SourceFilterConfig(heuristics={}) for s in ("web", "books", "code") if s != source})
    return heuristic_steps(only, tmp)[1:]  # drop the input check


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, help="a stage folder with docs/*.jsonl.gz (default: built from shared data)")
    p.add_argument("--shared-data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    p.add_argument("--web", type=int, default=300)
    p.add_argument("--books", type=int, default=4)
    p.add_argument("--code", type=int, default=100)
    p.add_argument("--generalisation", action="store_true",
                   help="measure the quality classifier on data it was not tuned on (filter_generalisation.py)")
    p.add_argument("--work", type=Path, help="--generalisation: folder for its inputs/outputs (reused: pages cached)")
    p.add_argument("--tune-only", action="store_true", help="--generalisation: run the tune part only (while tuning)")
    a = p.parse_args()
    if a.generalisation:
        from filter_generalisation import generalisation

        generalisation(a.shared_data, a.work, a.tune_only)
        return

    tmp = Path(tempfile.mkdtemp(prefix="filter_bench_"))
    if a.input is None:
        from tasks.filter.sample import build_sample

        build_sample(a.shared_data, tmp / "in", web_per_file=max(1, a.web // 5), books=a.books, code_files=a.code)
        a.input = tmp / "in"
    rows = list(iter_docs(a.input))
    by = {s: [r for r in rows if r["metadata"].get("source") == s] for s in ("web", "books", "code")}
    by["web"], by["books"], by["code"] = by["web"][: a.web], by["books"][: a.books], by["code"][: a.code]

    cfg = FilterConfig()
    spacy_cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"word_tokenizer": "spacy"})})
    whole_books = cfg.model_copy(update={"books": cfg.books.model_copy(update={"heuristics_max_chars": 0})})
    _time_steps(_heuristics(spacy_cfg, "web", tmp / "r"), by["web"][:2])  # load spaCy outside the timing

    table = []

    def row(name, ours, base, n, base_name):
        (t1, chars), (t0, _) = ours, base
        table.append((name, n, n / t1, chars / t1 / 1e6, base_name, n / t0 if t0 else float("nan"), t0 / t1 if t0 else float("nan")))

    row("web heuristics", _time_steps(_heuristics(cfg, "web", tmp / "r"), copy.deepcopy(by["web"])),
        _time_steps(_heuristics(spacy_cfg, "web", tmp / "r"), copy.deepcopy(by["web"])), len(by["web"]),
        "datatrove spaCy words")
    row("book heuristics", _time_steps(_heuristics(cfg, "books", tmp / "r"), by["books"]),
        _time_steps(_heuristics(whole_books, "books", tmp / "r"), by["books"]), len(by["books"]), "whole book")
    code = _time_steps(_heuristics(cfg, "code", tmp / "r"), by["code"])
    row("code checks", code, (0.0, 0), len(by["code"]), "(none in datatrove)")

    # classifier scoring: train a throwaway model on this input, then time both scorers
    from datatrove.pipeline.filters.fasttext_filter import FastTextClassifierFilter

    from tasks.filter import classifier as clf

    c = ClassifierConfig(epoch=3)
    labelled = clf.label_documents([(r["id"], r["text"]) for r in by["books"]], by["web"], [], c)
    model_path = tmp / "model.bin"
    clf.train(labelled, c, model_path)
    scored = by["web"] + by["books"] + by["code"]
    ours = clf.QualityScorer(clf.FoldModels([str(model_path)], c.seed, c.chunk_words, c.max_chunks_per_doc), {})
    base = FastTextClassifierFilter(str(model_path), keep_labels=("hq", 0.5), newline_replacement=" ")
    ours.filter_batch(_docs(scored[:2])), base.filter(_docs(scored[:1])[0])  # load models
    docs = _docs(scored)
    t = time.perf_counter()
    for i in range(0, len(docs), 64):
        ours.filter_batch(docs[i:i + 64])
    t_ours = time.perf_counter() - t
    row("classifier scoring", (t_ours, sum(len(d.text) for d in docs)),
        _time_steps([base], scored), len(scored), "datatrove fastText filter")

    print(f"\nfilter throughput, 1 process; input {a.input}\n")
    print(f"{'step':<20}{'docs':>6}{'ours docs/s':>13}{'ours MB/s':>11}  {'baseline':<26}{'docs/s':>9}{'ours/base':>11}")
    for name, n, dps, mbs, bname, bdps, ratio in table:
        print(f"{name:<20}{n:>6}{dps:>13.1f}{mbs:>11.2f}  {bname:<26}{bdps:>9.1f}{ratio:>10.1f}x")


if __name__ == "__main__":
    main()
