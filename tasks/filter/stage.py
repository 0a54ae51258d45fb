"""run_filter: heuristics (datatrove) → train or load the quality classifier → score and threshold (datatrove).

Work happens in the atomic staging folder, so a crash resumes: datatrove skips ranks with completion
markers. Datatrove's gzip writer stamps the time, so pipelines write plain JSONL and the last step
recompresses every shard with gzip mtime=0 (byte-identical outputs for identical inputs).
"""
from __future__ import annotations

import gzip
import json
import logging
import shutil
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_dir, atomic_write_json, staging_path
from tasks.config.filter import SOURCES, FilterConfig
from tasks.docs import DOCS, REJECTS, doc_files, iter_docs, write_docs
from tasks.executor import run_executor

from . import classifier as clf

log = logging.getLogger("tinyfoundry.filter")
MODEL_FILE = "quality_model.bin"


def _reshard(folder: Path, out: Path, shards: int) -> tuple[int, int]:
    """Spread the input's lines over `shards` plain JSONL files, balanced by size (datatrove gives each task
    whole files, and upstream shard counts and sizes vary). Counts lines and damaged shards, whose lines
    before the damage are kept. Returns (non-blank lines, damaged shards)."""
    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"{i:05d}.jsonl", "wb") for i in range(shards)]
    load = [0] * shards
    lines = damaged = 0
    try:
        for path in doc_files(folder):
            try:
                with gzip.open(path, "rb") as f:
                    for line in f:
                        if not line.strip():
                            continue
                        lines += 1
                        try:
                            line.decode("utf-8")
                        except UnicodeDecodeError:  # would stop datatrove's reader for the rest of the shard
                            log.warning("input shard %s: a line is not UTF-8; skipped", path)
                            continue
                        i = load.index(min(load))
                        files[i].write(line if line.endswith(b"\n") else line + b"\n")
                        load[i] += min(len(line), 200_000)  # heuristics read at most ~100k chars of a book
            except (EOFError, OSError, zlib.error) as e:
                damaged += 1
                log.warning("input shard %s is damaged (%s): kept the documents before the damage", path, e)
    finally:
        for f in files:
            f.close()
    return lines, damaged


def _read_jsonl(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f if line.strip())
    return docs


def _finalize(src: Path, dst: Path) -> None:
    """Each plain JSONL shard of `src` → `dst/<name>.jsonl.gz`, deterministic gzip (tasks.docs.write_docs)."""
    for path in sorted(src.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            write_docs(dst / f"{path.stem}.jsonl.gz", (json.loads(line) for line in f if line.strip()))


def _fingerprint(cfg: FilterConfig, inputs: Path) -> dict:
    files = {p.name: p.stat().st_size for p in doc_files(inputs)}
    return {"params": cfg.model_dump(mode="json"), "inputs": files}


def run_filter(cfg: FilterConfig, inputs: dict[str, Path], output: Path) -> dict:
    from datatrove.pipeline.readers import JsonlReader

    from .heuristics import TolerantJsonlReader, heuristic_steps, writer

    cfg.check_heuristic_kwargs()
    source = Path(inputs["docs"]).absolute()
    output = Path(output).absolute()  # Slurm and Ray tasks do not start in this folder
    fingerprint = _fingerprint(cfg, source)
    previous = staging_path(output) / "fingerprint.json"
    resume = previous.exists() and json.loads(previous.read_text()) == fingerprint
    with atomic_dir(output, resume=resume) as stage:
        atomic_write_json(stage / "fingerprint.json", fingerprint)
        work = stage / "work"
        counts = work / "input_counts.json"
        if not counts.exists():
            atomic_write_json(counts, _reshard(source, work / "input", cfg.executor.tasks))
        input_lines, damaged = json.loads(counts.read_text())
        log.info("filter: %d documents in %d shard(s) from %s%s", input_lines, len(doc_files(source)), source,
                 " (resuming a previous partial run)" if resume else "")

        # 1. heuristics, per source, each filter's drops to its own exclusion writer
        log.info("filter: heuristics pass (%s tasks, %s workers)", cfg.executor.tasks, cfg.executor.workers)
        pipeline = [TolerantJsonlReader(str(work / "input"), glob_pattern="*.jsonl", compression=None,
                                        add_file_path=False),
                    *heuristic_steps(cfg, work / "rejects_heuristics"),
                    writer(work / "kept_heuristics", "${rank}.jsonl")]
        run_executor(cfg.executor, pipeline, work / "logs_heuristics", "filter-heuristics")
        kept = _read_jsonl(work / "kept_heuristics")
        rejected = _read_jsonl(work / "rejects_heuristics")
        log.info("filter: heuristics kept %d, dropped %d documents", len(kept), len(rejected))

        # 2. the quality classifier: trained on this data, or the model file params point at
        c = cfg.classifier
        model_path = stage / MODEL_FILE
        labelled = clf.label_documents(kept, rejected, c)
        train_rows, heldout = clf.split(labelled, c)
        cls_stats: dict = {"trained": c.model_path is None, "labelled_docs": len(labelled)}
        if c.model_path is None:
            if not model_path.exists():  # a resumed run keeps the model it already trained
                cls_stats.update(clf.train(train_rows, c, model_path))
        else:
            shutil.copyfile(c.model_path, model_path)
        model = clf.load_model(model_path)
        cls_stats.update(clf.evaluate(model, heldout, c, c.positive_label))
        log.info("filter: classifier on %d held-out documents: %s", cls_stats.get("heldout_docs", 0),
                 {k: v for k, v in cls_stats.items() if k in ("precision", "recall", "f1", "roc_auc")})

        # 3. thresholds: min_quality_score, raised to the keep_top_fraction quantile where one is set
        thresholds = {}
        for src in SOURCES:
            scfg = getattr(cfg, src)
            thr = scfg.min_quality_score
            if scfg.keep_top_fraction is not None:
                texts = [d["text"] for d in kept if d["metadata"].get("source") == src]
                if texts:
                    scores = clf.score_texts(model, texts, c.chunk_words, c.max_chunks_per_doc, c.positive_label)
                    thr = max(thr, float(np.quantile(scores, 1 - scfg.keep_top_fraction, method="higher")))
            thresholds[src] = round(thr, 6)
        del kept

        # 4. score and threshold the kept documents (datatrove), score the heuristic rejects too
        scorer = dict(model_path=str(model_path), chunk_words=c.chunk_words, max_chunks=c.max_chunks_per_doc,
                      label=c.positive_label)
        pipeline = [JsonlReader(str(work / "kept_heuristics"), glob_pattern="*.jsonl", compression=None,
                                add_file_path=False),
                    clf.QualityScorer(**scorer, thresholds=thresholds,
                                      exclusion_writer=writer(work / "rejects_classifier", "classifier_${rank}.jsonl",
                                                              rejects=True)),
                    writer(work / "docs", "${rank}.jsonl")]
        run_executor(cfg.executor, pipeline, work / "logs_score", "filter-score")
        # heuristic rejects are few; scoring them here keeps their shard names (one per filter)
        for path in sorted((work / "rejects_heuristics").glob("*.jsonl")):
            docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for d, s in zip(docs, clf.score_texts(model, [d["text"] for d in docs], c.chunk_words,
                                                   c.max_chunks_per_doc, c.positive_label)):
                d["metadata"]["quality_score"] = s
            write_docs(stage / REJECTS / f"{path.stem}.jsonl.gz", docs)

        _finalize(work / "docs", stage / DOCS)
        _finalize(work / "rejects_classifier", stage / REJECTS)
        shutil.rmtree(work)
        (stage / "fingerprint.json").unlink()
        stats = _count(stage, input_lines, damaged)

    stats.update({"classifier": cls_stats, "thresholds": thresholds})
    log.info("filter: kept %d of %d documents (%s); rejected by reason: %s", stats["docs_kept"], stats["docs_in"],
             stats["kept"], stats["rejected_by_reason"])
    return stats


def _count(stage: Path, input_lines: int, damaged: int) -> dict:
    kept, rejected, by_reason = Counter(), defaultdict(Counter), Counter()
    scores = defaultdict(list)
    for doc in iter_docs(stage, DOCS):
        kept[doc["metadata"].get("source", "unknown")] += 1
        scores[doc["metadata"].get("source", "unknown")].append(doc["metadata"]["quality_score"])
    for doc in iter_docs(stage, REJECTS):
        reason = doc["metadata"].get("reject_reason", "unknown")
        rejected[doc["metadata"].get("source", "unknown")][reason] += 1
        by_reason[reason] += 1
    n_kept, n_rej = sum(kept.values()), sum(by_reason.values())
    skipped = input_lines - n_kept - n_rej
    if skipped or damaged:
        log.warning("filter: %d input line(s) were unreadable and skipped; %d damaged shard(s)", skipped, damaged)
    return {"docs_in": n_kept + n_rej, "docs_kept": n_kept, "docs_rejected": n_rej,
            "skipped_unreadable": max(skipped, 0), "damaged_files": damaged,
            "kept": {s: kept[s] for s in sorted(kept)},
            "rejected": {s: dict(sorted(r.items())) for s, r in sorted(rejected.items())},
            "rejected_by_reason": dict(sorted(by_reason.items())),
            "mean_quality_score": {s: round(float(np.mean(v)), 4) for s, v in sorted(scores.items())}}
