"""Decontamination cost next to the filter stage's, and why short benchmark text must not match on its own.

    python benchmarks/decontaminate.py [--dedup data/dedup] [--eval ../shared/data/eval] [--max-k 9]
                                       [--tables stages,matcher,collisions,floors]

1. Cost: `python -m tasks filter` on the dedup output, then `python -m tasks decontaminate` on what filter
   kept -- the two stages as dvc.yaml runs them, with params.yaml, except that each runs its datatrove
   tasks in its own process (`executor.workers: 1`): datatrove's worker pool hangs off a forkserver, so
   the workers' CPU time would not be counted. Timed in CPU seconds (stage process and its children) and
   wall seconds. Then the matcher alone in this process vs datatrove's `NGramsDecontFilter` (13-grams,
   its spaCy word splitting) on the same documents, both against PIQA + OpenBookQA.
2. Collisions: the share of each benchmark's distinct k-grams (by unit role) that occur anywhere in real
   text, for k = 3..max-k, on two splits of the documents: books + documentation sites (looked at when the
   floors were set) and the rest (crawled pages, code: held out). Everyday phrases collide at small k; the
   rate falls with k and grows with corpus size (tasks/config/decontaminate.py: MIN_WORDS).
3. Floors: documents hit per benchmark in the same real documents (none holds a benchmark item) with every
   task's floor set to 5, 6, ... 12 words.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from tasks.config import load_config, read_yaml
from tasks.decontaminate.ngrams import NgramIndex, normal_words
from tasks.docs import iter_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS_SITES = ("docs.python.org", "www.postgresql.org", "postgresql.org", "www.debian.org", "debian.org")


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_stage(args: list[str], env: dict) -> tuple[float, float]:
    """(CPU seconds of the stage process and its workers, wall seconds) of one `python -m tasks` call."""
    cpu, wall = _cpu_children(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "tasks", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _cpu_children() - cpu, time.perf_counter() - wall


def megabytes(folder: Path) -> tuple[int, float]:
    docs = chars = 0
    for d in iter_docs(folder):
        docs, chars = docs + 1, chars + len(d["text"])
    return docs, chars / 1e6


def stage_costs(dedup: Path, eval_dir: Path, tmp: Path) -> list[list]:
    env = {**os.environ, "TINYFOUNDRY_FLOW_RUN": "1"}  # the stage processes skip MLflow, as under the flow
    params = read_yaml(ROOT / "params.yaml")
    for stage in ("filter", "decontaminate"):
        params[stage]["executor"] = {**params[stage]["executor"], "workers": 1}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", str(tmp / "params.yaml")]
    filt, out = tmp / "filter", tmp / "decontam"
    f_cpu, f_wall = run_stage(["filter", "--in", f"docs={dedup}", "--out", str(filt),
                               "--metrics", str(tmp / "filter.json"), *common], env)
    d_cpu, d_wall = run_stage(["decontaminate", "--in", f"docs={filt}", "--in", f"eval={eval_dir}", "--out", str(out),
                               "--metrics", str(tmp / "decontaminate.json"), *common], env)
    (f_docs, f_mb), (d_docs, d_mb) = megabytes(dedup), megabytes(filt)
    return [["filter stage (baseline)", f_docs, f_mb, f_cpu, f_wall, f_mb / f_cpu, 1.0],
            ["decontaminate stage", d_docs, d_mb, d_cpu, d_wall, d_mb / d_cpu, d_cpu / f_cpu]]


def matcher_costs(folder: Path, cfg, eval_dir: Path) -> list[list]:
    from tasks.decontaminate.stage import build_index

    docs = [d["text"] for d in iter_docs(folder)]
    mb = sum(map(len, docs)) / 1e6
    start = time.process_time()
    index, _ = build_index(cfg, eval_dir)
    index.tables()
    build = time.process_time() - start
    start = time.process_time()
    ours = sum(bool(index.find(normal_words(t))) for t in docs)
    ours_s = time.process_time() - start
    rows = [["ours: index build", len(index.entries), None, build, None],
            ["ours: match", len(docs), mb, ours_s, ours]]
    hits, seconds = datatrove_matcher(index, docs)
    rows.append(["datatrove NGramsDecontFilter (spaCy words)", len(docs), mb, seconds, hits])
    return rows


def datatrove_matcher(index: NgramIndex, docs: list[str]) -> tuple[int, float]:
    """datatrove's filter with an index of the same 13-grams (its indexer needs lighteval; the hash files are
    written here the way it writes them)."""
    from datatrove.data import Document
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func

    config = NGramsDecontConfig(n_grams=index.ngram_words)
    hash_func = create_hash_func(config.hash_config)
    folder = Path(tempfile.mkdtemp(prefix="dt_decont_"))
    grams = [e.words for gram, e in index.entries.items() if len(gram) == index.ngram_words]
    np.array(sorted({hash_func(g) for g in grams}), dtype=config.hash_config.np_descr).tofile(folder / "all.index.hashes")
    filt = NGramsDecontFilter(str(folder), config=config)
    start = time.process_time()
    hits = sum(filt.filter(Document(text=t, id=str(i))) is not True for i, t in enumerate(docs))
    return hits, time.process_time() - start


def collision_rows(docs: list[dict], cfg, eval_dir: Path, max_k: int) -> list[list]:
    from tasks.decontaminate.units import item_units
    from tasks.evaluate.benchmarks import read_benchmark, resolve_uri

    vocab: dict[str, int] = {}
    units = {}
    for t in cfg.tasks:
        rows = read_benchmark(t.resolved_format, resolve_uri(t.data, eval_dir),
                              resolve_uri(t.labels, eval_dir) if t.labels else None)
        units[t.name] = [(role, np.array([vocab.setdefault(w, len(vocab)) for w in normal_words(text)], np.int64))
                         for row in rows for role, text in item_units(t.resolved_format, row)]
    split = {"tuning: books + docs sites": [], "held out: crawl + code": []}
    for d in docs:
        m = d["metadata"]
        tuning = m.get("source") == "books" or m.get("domain") in DOCS_SITES
        split[list(split)[0 if tuning else 1]].append(
            np.array([vocab.get(w, -1) for w in normal_words(d["text"])], np.int64))
    out = []
    for name, arrays in split.items():
        words = sum(map(len, arrays))
        for k in range(3, max_k + 1):
            corpus = np.unique(np.concatenate([_windows(a, k) for a in arrays]))
            row = [name, f"{words / 1e6:.2f}M", k]
            for task in units:
                for roles in (("answer",), ("question", "question+answer", "item")):
                    grams = np.unique(np.concatenate([_windows(a, k) for r, a in units[task] if r in roles]
                                                     + [np.zeros(0, np.uint64)]))
                    found = int(np.isin(grams, corpus).sum())
                    row.append(f"{100 * found / len(grams):.3f}% ({found:,})" if len(grams) else None)
            out.append(row)
    return out


def _windows(ids: np.ndarray, k: int) -> np.ndarray:
    from tasks.decontaminate.ngrams import _PRIME

    h = np.zeros(max(len(ids) - k + 1, 0), dtype=np.uint64)
    digits = (ids + 1).astype(np.uint64)
    for j in range(k):
        h = h * _PRIME + digits[j:j + len(h)]
    return h


def table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return "–" if v is None else f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows])


def floor_rows(docs: list[dict], cfg, eval_dir: Path, floors: list[int]) -> list[list]:
    """Documents hit per benchmark when every task's floor is `floor` (no document here holds a benchmark item)."""
    from tasks.decontaminate.stage import build_index

    words = [normal_words(d["text"]) for d in docs]
    rows = []
    for floor in floors:
        index, _ = build_index(cfg.model_copy(update={"min_words": {t.name: floor for t in cfg.tasks}}), eval_dir)
        hit = Counter(name for w in words
                      for name in {index.task_names[t] for m in index.find(w) for t, _ in m.entry.items})
        rows.append([floor, len(index.entries), *(hit[n] for n in index.task_names)])
    return rows


TABLES = ("stages", "matcher", "collisions", "floors")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dedup", type=Path, default=ROOT / "data" / "dedup", help="the filter stage's input")
    p.add_argument("--eval", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    p.add_argument("--max-k", type=int, default=9)
    p.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, of {', '.join(TABLES)}")
    a = p.parse_args()
    tables = a.tables.split(",")
    cfg = load_config(ROOT / "params.yaml").decontaminate
    names = [t.name for t in cfg.tasks]
    tmp = Path(tempfile.mkdtemp(prefix="decontam_bench_"))
    if "stages" in tables:
        print("## Stage cost, as dvc.yaml runs them, tasks in one process (CPU = stage process + children)\n")
        print(table(["stage", "docs in", "MB in", "CPU s", "wall s", "MB per CPU-s", "CPU vs filter"],
                    stage_costs(a.dedup, a.eval, tmp)))
    if "matcher" in tables:
        print("\n## Matcher alone, one process, PIQA + OpenBookQA\n")
        folder = tmp / "filter" if (tmp / "filter").is_dir() else a.dedup
        rows = matcher_costs(folder, cfg, a.eval)
        base = rows[-1][3]
        print(table(["matcher", "docs / entries", "MB", "CPU s", "docs hit", "MB per CPU-s", "CPU vs datatrove"],
                    [r + ([r[2] / r[3], r[3] / base] if r[2] else [None, None]) for r in rows]))
    if "collisions" in tables:
        print(f"\n## Distinct benchmark k-grams found in real text: share (count), documents of {a.dedup}\n")
        print(table(["documents", "words", "k", *(f"{n} {r}" for n in names for r in ("answers", "questions+"))],
                    collision_rows(list(iter_docs(a.dedup)), cfg, a.eval, a.max_k)))
    if "floors" in tables:
        docs = list(iter_docs(a.dedup))
        print(f"\n## Documents hit by floor (every task's min_words), all {len(docs):,} documents of {a.dedup}\n")
        print(table(["floor", "index entries", *(f"{n} docs hit" for n in names)],
                    floor_rows(docs, cfg, a.eval, list(range(5, cfg.ngram_words)))))


if __name__ == "__main__":
    main()
