"""run_filter: heuristics (datatrove) → train, load and validate the quality classifier → per-source cuts and
the drop guard → score and threshold (datatrove).

Work happens in the atomic staging folder, so a crash resumes: datatrove skips ranks with completion
markers, and trained classifiers are kept; only when the code, inputs and params are unchanged
(tasks/resume.py). Datatrove's gzip writer stamps the time, so pipelines write plain JSONL and the last step
recompresses every shard with gzip mtime=0 (byte-identical outputs for identical inputs).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_write_json
from tasks.config.filter import SOURCES, ClassifierConfig, FilterConfig
from tasks.docs import DOCS, REJECTS, doc_files, iter_docs, write_docs
from tasks.executor import run_executor
from tasks.resume import datatrove_params, resumable_dir, stage_key

from . import classifier as clf

log = logging.getLogger("tinyfoundry.filter")
MODEL_FILE = "quality_model.bin"
FOLD_MODEL_FILE = "quality_model.fold{}.bin"
LABELS_FILE = "quality_labels.jsonl.gz"


class ClassifierNotValidated(RuntimeError):
    """`filter.classifier.require_validated` is set and the classifier could not prove itself."""


class DropGuardError(RuntimeError):
    """The classifier would drop more of a source than `filter.classifier.max_drop_fraction` allows."""


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


def _classifier(c: ClassifierConfig, reference: Path | None, kept: list[dict], rejected: list[dict],
                stage: Path) -> tuple[clf.FoldModels, dict, str | None]:
    """Train one model per cross-fitting fold (or copy the given model) and validate on the held-out split.
    Writes every labelled document's id, label, split and held-out score to LABELS_FILE.
    Returns (models, stats, None or why the classifier may not drop anything)."""
    skipped: dict[str, int] = {}
    refs = list(clf.reference_documents(reference, c.reference_text_key, skipped)) if reference else []
    labelled = clf.label_documents(refs, kept, rejected, c)
    train_rows, heldout = clf.split(labelled, c)
    stats: dict = {"trained": c.model_path is None, "reference_docs": len(refs), "reference_skipped": skipped,
                   "labelled_docs": len(labelled), "train_docs_hq": sum(r.label == clf.POSITIVE for r in train_rows),
                   "train_docs_lq": sum(r.label == clf.NEGATIVE for r in train_rows)}
    log.info("filter: classifier labels: %d reference documents (positives), %d %s documents sampled as "
             "negatives (pool: %s); %d held out", len(refs), len(labelled) - len(refs), c.negative_source,
             c.negative_pool, len(heldout))
    if c.model_path is None:
        paths = [stage / (MODEL_FILE if c.folds == 1 else FOLD_MODEL_FILE.format(k)) for k in range(c.folds)]

        def train_fold(k: int) -> dict:
            rows = [r for r in train_rows if r.label == clf.POSITIVE or c.folds == 1
                    or clf.fold_of(r.id, c.folds, c.seed) != k]
            partial = paths[k].with_name(f".{paths[k].name}.partial")  # renamed once saved: never half a model
            fold_stats = clf.train(rows, c, partial)
            os.replace(partial, paths[k])
            return fold_stats

        todo = [k for k, path in enumerate(paths) if not path.exists()]  # a resumed run keeps trained models
        # each fold trains single-threaded in its own process (fastText is reproducible only so): run them side by side
        with ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            for k, fold_stats in zip(todo, pool.map(train_fold, todo)):
                stats[f"fold{k}"] = fold_stats
    else:
        paths = [stage / MODEL_FILE]
        shutil.copyfile(c.model_path, paths[0])
    models = clf.FoldModels([str(p) for p in paths], c.seed, c.chunk_words, c.max_chunks_per_doc, c.positive_label)
    metrics, scores = clf.evaluate(models, heldout)
    stats.update(metrics)
    held_scores = dict(zip((r.id for r in heldout), scores))
    write_docs(stage / LABELS_FILE, ({"id": r.id, "label": r.label, "split": "heldout" if r.id in held_scores else "train",
                              **({"score": held_scores[r.id]} if r.id in held_scores else {})} for r in labelled))
    verdict = clf.validation_verdict(metrics, c)
    stats["validated"] = int(verdict is None)
    if verdict is None:
        log.info("filter: classifier validated on %d held-out documents: precision %.3f, recall %.3f, F1 %.3f "
                 "(min_f1 %.2f), ROC-AUC %.3f", metrics["heldout_docs"], metrics["precision"], metrics["recall"],
                 metrics["f1"], c.min_f1, metrics["roc_auc"])
        return models, stats, None
    stats["not_validated_because"] = verdict
    if c.require_validated:
        raise ClassifierNotValidated(f"filter: the quality classifier is not validated: {verdict}. "
                                     "filter.classifier.require_validated is true, so the stage stops.")
    log.warning("filter: the quality classifier is not validated: %s. It drops nothing: every document keeps its "
                "score in metadata.quality_score. Set filter.classifier.require_validated: true to make this an "
                "error.", verdict)
    return models, stats, verdict


def _cuts(cfg: FilterConfig, kept: list[dict], models: clf.FoldModels, verdict: str | None) -> dict[str, dict]:
    """Each source's score cut, realised on its documents that passed the heuristics: `min_quality_score`,
    raised to the score that keeps the top `keep_top_fraction`. An unvalidated classifier cuts nothing.
    Raises DropGuardError when a cut would drop more than `max_drop_fraction` of a source."""
    c = cfg.classifier
    cuts = {}
    for src in SOURCES:
        scfg = getattr(cfg, src)
        docs = [d for d in kept if d["metadata"].get("source") == src]
        texts = [d["text"] for d in docs]
        cut = {"threshold": 0.0, "docs": len(texts), "would_drop": 0, "drop_fraction": 0.0}
        if texts and verdict is None and (scfg.min_quality_score > 0 or scfg.keep_top_fraction is not None):
            scores = np.array(models.score([d["id"] for d in docs], texts))
            thr = scfg.min_quality_score
            if scfg.keep_top_fraction is not None:
                thr = max(thr, float(np.quantile(scores, 1 - scfg.keep_top_fraction, method="higher")))
            drop = int((scores < thr).sum())
            cut.update(threshold=round(thr, 6), would_drop=drop, drop_fraction=round(drop / len(texts), 4))
            rule = " and ".join([f"min_quality_score {scfg.min_quality_score}"] * (scfg.min_quality_score > 0)
                                + [f"keep_top_fraction {scfg.keep_top_fraction}"] * (scfg.keep_top_fraction is not None))
            log.info("filter: %s: score cut %.3g (filter.%s %s) drops %d of %d documents that passed the heuristics "
                     "(%.1f%%)", src, thr, src, rule, drop, len(texts), 100 * drop / len(texts))
            if drop / len(texts) > c.max_drop_fraction:
                raise DropGuardError(
                    f"filter: the quality classifier would drop {drop} of {len(texts)} {src} documents that passed the "
                    f"heuristics ({drop / len(texts):.0%}), more than filter.classifier.max_drop_fraction = "
                    f"{c.max_drop_fraction}. The cut is score {thr:.3g}, from filter.{src} {rule}. If so large a cut "
                    f"is intended, raise filter.classifier.max_drop_fraction; otherwise relax filter.{src}."
                    f"{'keep_top_fraction' if scfg.keep_top_fraction is not None else 'min_quality_score'} or check "
                    "the reference corpus (fetch.reference).")
        cuts[src] = cut
    return cuts


def run_filter(cfg: FilterConfig, inputs: dict[str, Path], output: Path) -> dict:
    from datatrove.pipeline.readers import JsonlReader

    from .heuristics import TolerantJsonlReader, heuristic_steps, writer

    cfg.check_heuristic_kwargs()
    source = Path(inputs["docs"]).absolute()
    output = Path(output).absolute()  # Slurm and Ray tasks do not start in this folder
    reference = Path(inputs["reference"]).absolute() if inputs.get("reference") else None
    if cfg.classifier.model_path is None and (reference is None or not reference.is_dir()):
        raise ValueError("filter: training the quality classifier needs the reference corpus: --in reference=<folder> "
                         "(dvc.yaml passes data/raw/reference, fetched from fetch.reference), or set "
                         "filter.classifier.model_path to an existing model")
    keyed_inputs = {"docs": source, **({"reference": reference} if reference else {}),
                    **({"classifier": cfg.classifier.model_path} if cfg.classifier.model_path else {})}
    with resumable_dir(output, stage_key("filter", datatrove_params(cfg), keyed_inputs)) as stage:
        work = stage / "work"
        counts = work / "input_counts.json"
        if not counts.exists():
            atomic_write_json(counts, _reshard(source, work / "input", cfg.executor.tasks))
        input_lines, damaged = json.loads(counts.read_text())
        log.info("filter: %d documents in %d shard(s) from %s", input_lines, len(doc_files(source)), source)

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

        # 2. the quality classifier: trained on the reference corpus vs a web sample, or the model params name;
        # validated on held-out documents of both classes before it may drop anything
        models, cls_stats, verdict = _classifier(cfg.classifier, reference, kept, rejected, stage)

        # 3. per-source cuts (absolute score and/or top fraction), realised on this data; the drop guard
        cuts = _cuts(cfg, kept, models, verdict)
        thresholds = {src: cut["threshold"] for src, cut in cuts.items()}
        del kept

        # 4. score and threshold the kept documents (datatrove), score the heuristic rejects too
        pipeline = [JsonlReader(str(work / "kept_heuristics"), glob_pattern="*.jsonl", compression=None,
                                add_file_path=False),
                    clf.QualityScorer(models, thresholds=thresholds,
                                      exclusion_writer=writer(work / "rejects_classifier", "classifier_${rank}.jsonl",
                                                              rejects=True)),
                    writer(work / "docs", "${rank}.jsonl")]
        run_executor(cfg.executor, pipeline, work / "logs_score", "filter-score")
        # heuristic rejects are few; scoring them here keeps their shard names (one per filter)
        for path in sorted((work / "rejects_heuristics").glob("*.jsonl")):
            docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for d, s in zip(docs, models.score([d["id"] for d in docs], [d["text"] for d in docs])):
                d["metadata"]["quality_score"] = s
            write_docs(stage / REJECTS / f"{path.stem}.jsonl.gz", docs)

        _finalize(work / "docs", stage / DOCS)
        _finalize(work / "rejects_classifier", stage / REJECTS)
        shutil.rmtree(work)
        stats = _count(stage, input_lines, damaged)

    stats.update({"classifier": cls_stats, "thresholds": thresholds, "cuts": cuts})
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
