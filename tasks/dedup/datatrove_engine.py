"""dedup with `engine: datatrove`: datatrove's own MinHash stages on the configured executor (local, Slurm, Ray).

Nothing holds every document in one process, so it scales past one machine's memory; the native engine
(tasks/dedup/stage.py) is faster on one machine. Same shingles size, bands × rows and seed as configured,
datatrove's own hashing (xxhash-64 of spaCy-tokenised word n-grams, its text normalisation), and the
native engine's output contract:

1. signatures (`executor.tasks` tasks): the inputs' docs shards → `MinhashDedupSignature`, which also keeps
   each document's facts (id, source, length, exact-text digest) and its whole signature beside the buckets;
2. buckets (`bands` tasks): `MinhashDedupBuckets`, pairs that share a band;
3. clusters (1 task): `MinhashDedupCluster`, connected components of those pairs;
4. keepers (this process, only the documents in clusters): inside each cluster, best-ranked first
   (`keep_priority`, then longer, then smaller id), a document is removed as a duplicate of the first kept
   member it matches (same exact digest, or estimated Jaccard ≥ `verify_threshold` from the two signatures),
   else kept. As in the native engine every removed document is within the threshold of the document it
   names in `duplicate_of` (datatrove alone keeps one document per connected component, unverified);
5. filter (`executor.tasks` tasks): the same reading order → `MinhashDedupFilter` (removed documents to
   rejects/ with reason and `duplicate_of`) → docs/; the keepers write clusters.jsonl.gz.
"""
from __future__ import annotations

import collections
import gzip
import json
import logging
import os
import resource
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.utils.hashing import HashConfig

from tasks.atomic import atomic_dir
from tasks.docs import DOCS, REJECTS, doc_files, document_problem
from tasks.executor import run_executor
from tasks.ingest.common import DocsWriter, RejectingReader, rejects_writer

from .minhash import exact_digest
from .stage import input_folders

log = logging.getLogger("tinyfoundry.dedup")

KEPT, EXACT, NEAR = "kept", "exact_duplicate", "near_duplicate"
ORDINAL = "_dedup_ordinal"  # a document's position in its task's reading order, between steps only
STAGED_SEP = "--"  # staged input file name: <source>--<original name>


def minhash_config(cfg) -> MinhashConfig:
    return MinhashConfig(n_grams=cfg.shingle_words, num_buckets=cfg.bands, hashes_per_bucket=cfg.rows, seed=cfg.seed,
                         hash_config=HashConfig(precision=64, hash_fc="xxhash"))


class DedupReader(RejectingReader):
    """The inputs' docs shards, staged as `<source>--<name>` links: valid documents in file order (source
    defaulted from the input name); a bad line goes to `rejects` with its reason, as in the native engine."""

    name = "📖 dedup inputs"

    def __init__(self, data_folder, rejects: DocsWriter):
        super().__init__(data_folder, rejects, glob_pattern=f"*{STAGED_SEP}*.jsonl.gz")

    def read_file(self, filepath: str):
        source, _, name = Path(filepath).name.partition(STAGED_SEP)
        line_no = 0
        try:
            with self.data_folder.open(filepath, "rb") as raw, gzip.open(raw, "rt", encoding="utf-8",
                                                                         errors="replace") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except json.JSONDecodeError:
                        doc, problem = None, "malformed_json"
                    else:
                        problem = document_problem(doc)
                    if problem:
                        self.reject(f"{source}/{name}:{line_no}", problem, text=line.rstrip("\n"), source=source)
                        continue
                    metadata = doc.get("metadata", {})
                    metadata.setdefault("source", source)
                    yield Document(text=doc["text"], id=doc["id"], metadata=metadata)
        except (OSError, EOFError, zlib.error, UnicodeError) as e:
            self.stat_update("dropped_corrupt_file")
            log.warning("%s is unreadable after line %d (%s); the rest of it is skipped", name, line_no, e)


class Ordinal:
    """Tags each document with its position in this task's reading order (what datatrove's MinHash files
    index documents by)."""

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        for i, doc in enumerate(data):
            doc.metadata[ORDINAL] = i
            yield doc


class Untag:
    """Drops the `Ordinal` tag before kept documents are written."""

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata.pop(ORDINAL, None)
            yield doc


class SignaturesWithFacts(MinhashDedupSignature):
    """datatrove's signature step that also writes, per document in reading order, its facts
    (`facts/<rank>.jsonl`: id, source, length, digest) and whole signature (`facts/<rank>.values`, uint64)
    for the keepers step. Documents without shingles get a zero signature (they are never in a cluster)."""

    def __init__(self, output_folder, facts_folder, config: MinhashConfig):
        super().__init__(output_folder, config=config)
        self.facts_folder = get_datafolder(facts_folder)
        self._values = None

    def get_signature(self, shingles):
        self._values = super().get_signature(shingles)
        return self._values

    def run(self, data, rank: int = 0, world_size: int = 1):
        zeros = np.zeros(self.num_hashes, dtype="<u8")
        with self.facts_folder.open(f"{rank:05d}.jsonl", "wt") as facts, \
                self.facts_folder.open(f"{rank:05d}.values", "wb") as values:
            def tee():
                for doc in data:
                    self._values = None
                    yield doc  # datatrove signs it before asking for the next one
                    row = zeros if self._values is None else np.asarray(self._values, dtype="<u8").reshape(-1)
                    values.write(row.tobytes())
                    facts.write(json.dumps([doc.id, doc.metadata.get("source"), len(doc.text),
                                            exact_digest(doc.text).hex()]) + "\n")

            super().run(tee(), rank, world_size)


class DuplicateRejects(DocsWriter):
    """The filter step's exclusion writer: adds reason, `duplicate_of`, its source and the Jaccard from the
    keepers step (`dups/<rank>.jsonl`), one rejects file per reason and task."""

    def __init__(self, output_folder, dups_folder):
        super().__init__(output_folder, output_filename="${reject_reason}_${rank}.jsonl.gz")
        self.dups_folder = get_datafolder(dups_folder)
        self._rank, self._dups = None, {}

    def write(self, document: Document, rank: int = 0, **kwargs):
        if rank != self._rank:
            with self.dups_folder.open(f"{rank:05d}.jsonl", "rt") as f:
                self._dups = {row["ordinal"]: row for row in map(json.loads, f)}
            self._rank = rank
        row = self._dups[document.metadata.pop(ORDINAL)]
        document.metadata.update(reject_reason=row["reason"], duplicate_of=row["duplicate_of"],
                                 duplicate_source=row["duplicate_source"], jaccard=row["jaccard"])
        super().write(document, rank, **kwargs)


# ------------------------------------------------------------------------------------------------ keepers

def _cluster_members(remove_dir: Path) -> np.ndarray:
    """(cluster, rank, ordinal) of every document datatrove put in a cluster, sorted."""
    parts = []
    for path in sorted(remove_dir.glob("*.clusters")):
        pairs = np.fromfile(path, dtype="<u4").reshape(-1, 2).astype(np.int64)  # (ordinal, cluster)
        parts.append(np.stack([pairs[:, 1], np.full(len(pairs), int(path.stem.split(".")[0])), pairs[:, 0]], 1))
    members = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    return members[np.lexsort((members[:, 2], members[:, 1], members[:, 0]))]


def _member_facts(facts_dir: Path, members: np.ndarray, num_values: int) -> tuple[list, np.ndarray]:
    """Facts rows and signatures of the clustered documents only (streamed per task: memory ∝ members)."""
    facts: list = [None] * len(members)
    values = np.zeros((len(members), num_values), dtype=np.uint64)
    for rank in np.unique(members[:, 1]).tolist():
        rows = np.flatnonzero(members[:, 1] == rank)
        wanted = dict(zip(members[rows, 2].tolist(), rows.tolist()))
        with open(facts_dir / f"{rank:05d}.jsonl") as f:
            for ordinal, line in enumerate(f):
                if ordinal in wanted:
                    facts[wanted[ordinal]] = json.loads(line)
        sigs = np.memmap(facts_dir / f"{rank:05d}.values", dtype="<u8", mode="r").reshape(-1, num_values)
        values[rows] = sigs[members[rows, 2]]
    return facts, values


def choose_keepers(work: Path, cfg, tasks: int, clusters_path: Path) -> dict:
    """Step 4: star clusters inside datatrove's components; rewrites `remove/<rank>.remove`, writes
    `dups/<rank>.jsonl` and the clusters file. Returns counts."""
    members = _cluster_members(work / "remove")
    facts, values = _member_facts(work / "facts", members, cfg.bands * cfg.rows)
    priority = {s: i for i, s in enumerate(cfg.keep_priority)}
    removed: dict[int, list[tuple[int, dict]]] = collections.defaultdict(list)
    stars: list[tuple[int, list[tuple[int, str, float]]]] = []  # keeper row, [(member row, reason, jaccard)]
    starts = np.flatnonzero(np.r_[True, members[1:, 0] != members[:-1, 0]]) if len(members) else []
    for start, end in zip(starts, [*starts[1:], len(members)]):
        rows = sorted(range(start, end), key=lambda r: (priority.get(facts[r][1], len(priority)), -facts[r][2],
                                                        str(facts[r][0]), members[r, 1], members[r, 2]))
        keepers: list[int] = []
        claimed: dict[int, list] = {}
        for r in rows:
            hit = None
            if keepers:
                jac = (values[keepers] == values[r]).mean(axis=1)
                for k, j in zip(keepers, jac.tolist()):
                    if facts[k][3] == facts[r][3]:
                        hit = (k, EXACT, 1.0)
                        break
                    if j >= cfg.verify_threshold:
                        hit = (k, NEAR, j)
                        break
            if hit is None:
                keepers.append(r)
                claimed[r] = []
                continue
            k, reason, j = hit
            claimed[k].append((r, reason, j))
            removed[int(members[r, 1])].append((int(members[r, 2]), {
                "ordinal": int(members[r, 2]), "reason": reason, "duplicate_of": facts[k][0],
                "duplicate_source": facts[k][1], "jaccard": round(j, 4)}))
        stars.extend((k, m) for k, m in claimed.items() if m)

    (work / "dups").mkdir(exist_ok=True)
    for rank in range(tasks):  # every task gets a (possibly empty) list, replacing datatrove's own
        rows = sorted(removed.get(rank, []), key=lambda x: x[0])
        np.array([o for o, _ in rows], dtype="<u4").tofile(work / "remove" / f"{rank:06d}.remove")
        with open(work / "dups" / f"{rank:05d}.jsonl", "w") as f:
            f.writelines(json.dumps(info) + "\n" for _, info in rows)

    order = lambda r: (str(facts[r][0]), int(members[r, 1]), int(members[r, 2]))  # noqa: E731
    stars.sort(key=lambda s: order(s[0]))
    with open(clusters_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for cluster, (k, claimed_rows) in enumerate(stars):
            for r, role, jac in [(k, KEPT, 1.0), *sorted(claimed_rows, key=lambda c: order(c[0]))]:
                gz.write((json.dumps({"id": facts[r][0], "source": facts[r][1], "cluster": cluster,
                                      "kept": facts[k][0], "jaccard": round(jac, 4), "role": role},
                                     sort_keys=True) + "\n").encode("utf-8"))
    reasons = collections.Counter(info["reason"] for rows in removed.values() for _, info in rows)
    return {"exact_dups": reasons[EXACT], "near_dups": reasons[NEAR], "clusters": len(stars),
            "datatrove_clusters": len(starts), "clustered_docs": len(members)}


# ---------------------------------------------------------------------------------------------------- run

def _stage_inputs(inputs: dict[str, Path], folder: Path, skipped: collections.Counter) -> None:
    folder.mkdir(parents=True)
    for name, source in input_folders(inputs, skipped):
        for path in doc_files(source):
            os.symlink(path.absolute(), folder / f"{name}{STAGED_SEP}{path.name}")


def _step_stats(logging_dir: Path) -> collections.Counter:
    """Counters of every step in a datatrove run's merged stats.json (e.g. the reader's `dropped_*`)."""
    out: collections.Counter = collections.Counter()
    path = logging_dir / "stats.json"
    for step in json.loads(path.read_text()) if path.exists() else []:
        for key, value in step.get("stats", {}).items():
            out[key] += value["total"] if isinstance(value, dict) else value
    return out


def _count(work: Path, skipped: collections.Counter, counts: dict) -> dict:
    """The native engine's stats, from the facts files (one pass, memory per source) and the removal lists."""
    docs_in, kept = collections.Counter(), collections.Counter()
    for facts in sorted((work / "facts").glob("*.jsonl")):
        removed = set(np.fromfile(work / "remove" / f"{int(facts.stem):06d}.remove", dtype="<u4").tolist())
        with open(facts) as f:
            for ordinal, line in enumerate(f):
                source = json.loads(line)[1]
                docs_in[source] += 1
                kept[source] += ordinal not in removed
    for key, value in _step_stats(work / "logs_signatures").items():
        if key.startswith("dropped_"):
            skipped[key.removeprefix("dropped_")] += int(value)
    own, children = (resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"engine": "datatrove", "docs_in": sum(docs_in.values()), **counts, "kept": sum(kept.values()),
            "peak_rss_mb": round(own, 1), "workers_peak_rss_mb": round(children, 1),
            "skipped": sum(skipped.values()), "skipped_by_reason": dict(sorted(skipped.items())),
            "docs_in_by_source": dict(sorted(docs_in.items())),
            "kept_by_source": dict(sorted(kept.items()))}


def _run_stages(cfg, work: Path, stage: Path) -> tuple[dict, float]:
    """Steps 1–5 of the module docstring (each datatrove stage logs to `work/logs_<step>`); returns the keepers'
    counts and the signature step's seconds."""
    started = time.time()
    ex, mh = cfg.executor, minhash_config(cfg)
    read = lambda rejects: DedupReader(str(work / "input"), rejects)  # noqa: E731
    run_executor(ex, [read(rejects_writer(work / "scratch", "malformed")),
                      SignaturesWithFacts(str(work / "sigs"), str(work / "facts"), mh)],
                 work / "logs_signatures", "dedup-signatures")
    sig_seconds = time.time() - started
    buckets = ex.model_copy(update={"tasks": cfg.bands, "workers": min(ex.workers, cfg.bands)})
    run_executor(buckets, [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)],
                 work / "logs_buckets", "dedup-buckets")
    one = ex.model_copy(update={"tasks": 1, "workers": 1})
    run_executor(one, [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh,
                                           save_cluster_id=True)], work / "logs_clusters", "dedup-clusters")
    counts = choose_keepers(work, cfg, ex.tasks, stage / "clusters.jsonl.gz")
    rejects = DuplicateRejects(str(stage / REJECTS), str(work / "dups"))
    run_executor(ex, [read(rejects_writer(stage, "malformed")), Ordinal(),
                      MinhashDedupFilter(str(work / "remove"), exclusion_writer=rejects), Untag(), DocsWriter(stage / DOCS)],
                 work / "logs_filter", "dedup-filter")
    return counts, sig_seconds


def run_datatrove_dedup(cfg, inputs: dict[str, Path], output: Path) -> dict:
    started = time.time()
    output = Path(output).absolute()  # Slurm and Ray tasks do not start in this folder
    ex = cfg.executor
    log.info("dedup (datatrove engine, %s executor, %d tasks): %d-word shingles, %d bands x %d rows, verify at "
             "estimated Jaccard >= %.2f", ex.kind, ex.tasks, cfg.shingle_words, cfg.bands, cfg.rows,
             cfg.verify_threshold)
    skipped: collections.Counter = collections.Counter()
    with atomic_dir(output, resume=False) as stage:
        work = stage / "work"
        _stage_inputs(inputs, work / "input", skipped)
        for sub in ("facts", "remove", "buckets", DOCS, REJECTS):
            (work / sub if sub not in (DOCS, REJECTS) else stage / sub).mkdir(parents=True, exist_ok=True)
        if any((work / "input").iterdir()):
            counts, sig_seconds = _run_stages(cfg, work, stage)
        else:
            log.warning("dedup: no input shards at all; writing empty outputs")
            counts, sig_seconds = choose_keepers(work, cfg, 0, stage / "clusters.jsonl.gz"), 0.0
        stats = _count(work, skipped, counts)
        stats["candidate_pairs"] = sum(p.stat().st_size // 16 for p in (work / "buckets").glob("*.dups"))
        shutil.rmtree(work)  # the staged inputs are links: their targets stay
    seconds = time.time() - started
    stats.update(docs_per_s=round(stats["docs_in"] / max(seconds, 1e-9), 1), signature_seconds=round(sig_seconds, 3))
    log.info("dedup: %d in, %d exact and %d near duplicates removed in %d clusters, %d kept (%.0f docs/s)",
             stats["docs_in"], stats["exact_dups"], stats["near_dups"], stats["clusters"], stats["kept"],
             stats["docs_per_s"])
    return stats
