"""run_decontaminate: benchmark items out of the training documents, before the tokenizer sees them.

1. Index (one process): every item of every configured benchmark file, parsed by the evaluate stage's
   reader, broken into units (tasks/decontaminate/units.py) and indexed as word n-grams (ngrams.py).
2. Match (a datatrove executor, whole input shards per task): each document's words against the index.
   A match is cut out with `cut_window_chars` around it (`action: cut`, GPT-3's procedure) or removes the
   document (`action: remove`). Every cut span and removed document goes to `rejects/` with
   `reject_reason: contamination/<task>` and the matched n-gram; kept documents go to `docs/`.
3. Counts per task (documents hit, n-grams matched, benchmark items found) and per source.

datatrove's own n-gram decontamination (`datatrove.pipeline.decont`) is not used: it needs lighteval to
read the benchmarks, uses one n-gram size for every field (so short answers are either never matched or
matched as common phrases), can only drop whole documents, names no task in its reject reason and splits
words with spaCy (~7x slower here). Its index-then-filter layout is kept.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from tasks.atomic import atomic_dir, atomic_write_json, staging_path
from tasks.config.decontaminate import DecontaminateConfig
from tasks.docs import DOCS, REJECTS, doc_files, scan_file, write_docs
from tasks.executor import run_executor

from .ngrams import Match, NgramIndex, normal_words, word_spans
from .units import item_units

log = logging.getLogger("tinyfoundry.decontaminate")
REASON = "contamination"


# --------------------------------------------------------------------------------------------------- index


def build_index(cfg: DecontaminateConfig, eval_dir: Path | None) -> tuple[NgramIndex, dict]:
    """The n-gram index of every configured benchmark, and what went into it per task."""
    from tasks.evaluate.benchmarks import LOAD_STATS, read_benchmark, resolve_uri

    index = NgramIndex([t.name for t in cfg.tasks], cfg.ngram_words)
    stats = {}
    for number, task in enumerate(cfg.tasks):
        fmt, min_words = task.resolved_format, cfg.task_min_words(task)
        data = resolve_uri(task.data, eval_dir)
        rows = read_benchmark(fmt, data, resolve_uri(task.labels, eval_dir) if task.labels else None)
        units = too_short = matchable = 0
        for item, row in enumerate(rows):
            added = 0
            for _, text in item_units(fmt, row):
                n = index.add_unit(text, number, item, min_words)
                units, too_short, added = units + 1, too_short + (n == 0), added + n
            matchable += added > 0
        loaded = LOAD_STATS.get(data, {})
        stats[task.name] = {"format": fmt, "items": len(rows), "bad_rows": loaded.get("skipped", 0),
                            "sha256": loaded.get("sha256"), "min_words": min_words, "units": units,
                            "units_too_short": too_short, "items_matchable": matchable}
        if matchable < len(rows):
            log.warning("decontaminate: %d of %d %s items have no unit of %d+ words and cannot be matched",
                        len(rows) - matchable, len(rows), task.name, min_words)
        log.info("decontaminate: %s: %d items, %d units (%d shorter than %d words, matched only inside longer "
                 "ones)", task.name, len(rows), units, too_short, min_words)
    log.info("decontaminate: index of %d word sequences over %d distinct words", len(index.entries), len(index.vocab))
    return index, stats


# ------------------------------------------------------------------------------------------------ one doc


def _first_task(match: Match) -> int:
    return min(task for task, _ in match.entry.items)


def cut_regions(text: str, spans: list[tuple[int, int]], window: int, min_fragment: int) -> list[tuple[int, int]]:
    """Character regions to remove: each span widened by `window` to the nearest whitespace, overlapping
    regions merged, and pieces shorter than `min_fragment` left between or around them absorbed."""
    regions: list[list[int]] = []
    for a, b in sorted(spans):
        a, b = max(0, a - window), min(len(text), b + window)
        while a > 0 and not text[a - 1].isspace():
            a -= 1
        while b < len(text) and not text[b].isspace():
            b += 1
        if regions and a - regions[-1][1] < min_fragment:
            regions[-1][1] = max(regions[-1][1], b)
        else:
            regions.append([a, b])
    if regions and regions[0][0] < min_fragment:
        regions[0][0] = 0
    if regions and len(text) - regions[-1][1] < min_fragment:
        regions[-1][1] = len(text)
    return [(a, b) for a, b in regions]


def decontaminate_doc(doc: dict, index: NgramIndex,
                      cfg: DecontaminateConfig) -> tuple[dict | None, list[dict], list[Match]]:
    """(the document to keep or None, its rejects, its matches) for one document."""
    text = doc["text"]
    matches = index.find(normal_words(text))
    if not matches:
        return doc, [], []
    names = index.task_names
    per_task = Counter(names[t] for m in matches for t in {t for t, _ in m.entry.items})

    def reject(body: str, first: Match, reject_id: str, **extra) -> dict:
        task = _first_task(first)
        item = min(i for t, i in first.entry.items if t == task)
        return {"text": body, "id": reject_id, "metadata": {
            **doc.get("metadata", {}), "reject_reason": f"{REASON}/{names[task]}", "matched_ngram": first.entry.words,
            "matched_item": f"{names[task]}#{item}", "contamination": dict(sorted(per_task.items())), **extra}}

    if cfg.action == "cut":
        try:
            tokens, spans = word_spans(text)
        except ValueError:  # no character offsets for this text: the whole document goes
            tokens, spans = [], []
        located = index.find(tokens)
        if located:
            char_spans = [(spans[m.start][0], spans[m.start + m.length - 1][1]) for m in located]
            regions = cut_regions(text, char_spans, cfg.cut_window_chars, cfg.min_fragment_chars)
            kept = [text[a:b] for a, b in zip([0] + [b for _, b in regions], [a for a, _ in regions] + [len(text)])]
            kept = [piece.strip() for piece in kept if piece.strip()]
            if kept and len(regions) <= cfg.max_cuts:
                rejects = []
                for j, (a, b) in enumerate(regions):
                    inside = [m for m, (s, e) in zip(located, char_spans) if a <= s and e <= b]
                    rejects.append(reject(text[a:b], inside[0], f"{doc['id']}#cut{j}", parent_id=doc["id"],
                                          char_span=[a, b], decontaminate_action="cut"))
                removed = sum(b - a for a, b in regions)
                metadata = {**doc.get("metadata", {}), "contamination_cuts": len(regions),
                            "contamination_chars_removed": removed}
                return {**doc, "text": "\n\n".join(kept), "metadata": metadata}, rejects, matches
            why = "too_many_cuts" if kept else "nothing_left"
        else:
            why = "offsets_changed"
        return None, [reject(text, matches[0], doc["id"], decontaminate_action=f"removed ({why})")], matches
    return None, [reject(text, matches[0], doc["id"], decontaminate_action="removed")], matches


# ---------------------------------------------------------------------------------------- pipeline step


class Decontaminate(PipelineStep):
    """Reads its share of the input shards, writes `docs/<shard>` and `rejects/<shard>` and a stats file.

    The index is loaded from a file when the step runs, so the step pickles small for Slurm/Ray workers."""

    name = "🧪 N-gram decontamination"
    type = "🦠 - DECONT"

    def __init__(self, input_folder: str, index_file: str, output_folder: str, cfg: DecontaminateConfig):
        super().__init__()
        self.input_folder, self.index_file, self.output_folder, self.cfg = input_folder, index_file, output_folder, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with open(self.index_file, "rb") as f:
            index: NgramIndex = pickle.load(f)
        out = Path(self.output_folder)
        counts = _Counts(index.task_names)
        for path in doc_files(self.input_folder)[rank::world_size]:
            kept, rejects = [], []
            skipped: Counter = Counter()
            for problem, doc, where, raw in scan_file(path, skipped):
                if problem:
                    counts.bad_input[problem] += 1
                    rejects.append({"text": raw, "id": where, "metadata": {"reject_reason": f"input/{problem}"}})
                    continue
                counts.docs_in += 1
                source = doc.get("metadata", {}).get("source", "unknown")
                new, doc_rejects, matches = decontaminate_doc(doc, index, self.cfg)
                counts.add(source, doc, new, doc_rejects, matches)
                rejects.extend(doc_rejects)
                if new is not None:
                    kept.append(new)
                self.stat_update("documents")
            for name, n in skipped.items():
                counts.bad_input[name] += n
            _write(out / DOCS / path.name, kept)
            _write(out / REJECTS / path.name, rejects)
            log.info("decontaminate: %s: %d kept, %d rejects", path.name, len(kept), len(rejects))
        atomic_write_json(out / "work" / "stats" / f"{rank:05d}.json", counts.as_dict())
        return iter(())


def _write(path: Path, docs: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_docs(tmp, docs)
    os.replace(tmp, path)


class _Counts:
    """What one task of the executor saw; summed over tasks by `merge_counts`."""

    def __init__(self, task_names: list[str]):
        self.names = task_names
        self.docs_in = self.docs_out = self.docs_removed = self.docs_cut = self.spans_cut = 0
        self.chars_in = self.chars_removed = 0
        self.bad_input: Counter = Counter()
        self.task: dict[str, Counter] = {name: Counter() for name in task_names}
        self.items: dict[str, set] = {name: set() for name in task_names}
        self.by_source: dict[str, Counter] = defaultdict(Counter)

    def add(self, source: str, doc: dict, new: dict | None, rejects: list[dict], matches: list[Match]) -> None:
        self.chars_in += len(doc["text"])
        self.by_source[source]["docs_in"] += 1
        if not matches:
            self.docs_out += 1
            return
        self.by_source[source]["docs_hit"] += 1
        hit = set()
        for m in matches:
            for t, item in m.entry.items:
                self.task[self.names[t]]["ngrams_matched"] += 1
                self.items[self.names[t]].add(item)
                hit.add(self.names[t])
        for name in hit:
            self.task[name]["docs_hit"] += 1
        for r in rejects:
            task = r["metadata"]["reject_reason"].split("/", 1)[1]
            self.task[task]["spans_cut" if new is not None else "docs_removed"] += 1
        if new is None:
            self.docs_removed += 1
            self.chars_removed += len(doc["text"])
            self.by_source[source]["docs_removed"] += 1
        else:
            self.docs_out += 1
            self.docs_cut += 1
            self.spans_cut += len(rejects)
            self.chars_removed += new["metadata"]["contamination_chars_removed"]
            self.by_source[source]["docs_cut"] += 1

    def as_dict(self) -> dict:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "docs_removed": self.docs_removed,
                "docs_cut": self.docs_cut, "spans_cut": self.spans_cut, "chars_in": self.chars_in,
                "chars_removed": self.chars_removed, "bad_input": dict(self.bad_input),
                "tasks": {n: dict(c) for n, c in self.task.items()},
                "items": {n: sorted(s) for n, s in self.items.items()},
                "by_source": {s: dict(c) for s, c in self.by_source.items()}}


def merge_counts(parts: list[dict], task_names: list[str]) -> dict:
    total: dict = {k: 0 for k in ("docs_in", "docs_out", "docs_removed", "docs_cut", "spans_cut", "chars_in",
                                  "chars_removed")}
    bad, by_source = Counter(), defaultdict(Counter)
    tasks = {n: Counter() for n in task_names}
    items: dict[str, set] = {n: set() for n in task_names}
    for part in parts:
        for k in total:
            total[k] += part[k]
        bad.update(part["bad_input"])
        for n in task_names:
            tasks[n].update(part["tasks"].get(n, {}))
            items[n].update(part["items"].get(n, []))
        for s, c in part["by_source"].items():
            by_source[s].update(c)
    keys = ("docs_hit", "ngrams_matched", "docs_removed", "spans_cut")
    per_task = {n: {**{k: tasks[n][k] for k in keys}, "items_found": len(items[n])} for n in task_names}
    rejected = {f"{REASON}/{n}": t["docs_removed"] + t["spans_cut"] for n, t in per_task.items()}
    rejected.update({f"input/{k}": v for k, v in bad.items()})
    return {**total, "skipped": sum(bad.values()), "skipped_by_reason": dict(sorted(bad.items())),
            "rejected_by_reason": {k: v for k, v in sorted(rejected.items()) if v}, "tasks": per_task, "by_source": {s: dict(sorted(c.items())) for s, c in sorted(by_source.items())}}


# -------------------------------------------------------------------------------------------------- stage


def _fingerprint(cfg: DecontaminateConfig, index_stats: dict, source: Path) -> dict:
    return {"params": cfg.model_dump(mode="json"), "benchmarks": {n: s["sha256"] for n, s in index_stats.items()},
            "inputs": {p.name: p.stat().st_size for p in doc_files(source)}}


def run_decontaminate(cfg: DecontaminateConfig, inputs: dict[str, Path], output: Path) -> dict:
    started = time.time()
    source, output = Path(inputs["docs"]), Path(output)
    eval_dir = Path(inputs["eval"]) if inputs.get("eval") else None
    index, index_stats = build_index(cfg, eval_dir)
    index_seconds = time.time() - started
    fingerprint = _fingerprint(cfg, index_stats, source)
    previous = staging_path(output) / "fingerprint.json"
    resume = previous.exists() and json.loads(previous.read_text()) == fingerprint
    with atomic_dir(output, resume=resume) as stage:
        atomic_write_json(stage / "fingerprint.json", fingerprint)
        work = stage / "work"
        index_file = work / "index.pkl"
        index_file.parent.mkdir(parents=True, exist_ok=True)
        with open(index_file, "wb") as f:
            pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
        (stage / DOCS).mkdir(exist_ok=True)
        (stage / REJECTS).mkdir(exist_ok=True)
        shards = doc_files(source)
        log.info("decontaminate: %d shard(s) from %s against %s (%d-word n-grams, action %s)%s", len(shards), source,
                 ", ".join(index.task_names) or "no benchmarks", cfg.ngram_words, cfg.action,
                 " (resuming a previous partial run)" if resume else "")
        step = Decontaminate(str(source), str(index_file), str(stage), cfg)
        run_executor(cfg.executor, [step], work / "logs", "decontaminate")
        parts = [json.loads(p.read_text()) for p in sorted((work / "stats").glob("*.json"))]
        stats = merge_counts(parts, index.task_names)
        for name, s in index_stats.items():
            stats["tasks"][name] = {**stats["tasks"][name], **{k: v for k, v in s.items() if k != "sha256"}}
        shutil.rmtree(work)
        (stage / "fingerprint.json").unlink()
    seconds = time.time() - started
    stats.update({"index_seconds": round(index_seconds, 3), "index_entries": len(index.entries),
                  "docs_per_s": round(stats["docs_in"] / max(seconds, 1e-9), 1),
                  "mb_per_s": round(stats["chars_in"] / 1e6 / max(seconds, 1e-9), 2)})
    for name, t in stats["tasks"].items():
        log.info("decontaminate: %s: %d documents hit, %d n-grams matched, %d of %d items found", name,
                 t["docs_hit"], t["ngrams_matched"], t["items_found"], t["items"])
    log.info("decontaminate: %d documents in, %d kept (%d cut in %d spans), %d removed; %.2f%% of characters removed",
             stats["docs_in"], stats["docs_out"], stats["docs_cut"], stats["spans_cut"], stats["docs_removed"],
             100 * stats["chars_removed"] / max(stats["chars_in"], 1))
    return stats
