"""run_dedup: exact then MinHash-LSH near-duplicate removal across web, books and code.

1. Read every input's `docs/*.jsonl.gz` (bad lines/files: counted, logged, kept in rejects as `malformed`).
2. Signatures in worker processes: exact-text digest + MinHash over word n-grams (tasks/dedup/minhash.py).
3. Rank documents by the keep rule (`keep_priority` source order, then longer, then smaller id).
4. Exact duplicates: same digest → duplicate of the best-ranked member.
5. Near duplicates: insert every remaining signature into datasketch's `MinHashLSH` (bands × rows, banded
   `band_layouts` ways: tasks/dedup/lsh.py);
   walk the documents best-ranked first; a document not yet claimed is kept and claims each
   lower-ranked, unclaimed LSH candidate whose Jaccard reaches `verify_threshold` (estimated from
   the full signatures, or exact over the shingle-hash sets with `verify: exact`). Every cluster is a star around its kept document, so every removed document
   is within the threshold of the document it names in `duplicate_of` (no chaining through a third).
6. Second read: kept documents → `docs/`, removed → `rejects/` with reason and `duplicate_of`;
   `clusters.jsonl.gz` maps every member of a cluster to its cluster, kept id and estimated Jaccard.
"""
from __future__ import annotations

import collections
import gzip
import json
import logging
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from datasketch import LeanMinHash
from tqdm import tqdm

from tasks.atomic import atomic_dir
from tasks.docs import DOCS, REJECTS, doc_files, scan_docs

from .lsh import CompactMinHashLSH, banded_signatures, drop_index, make_index
from .minhash import Hasher, _batch_worker, estimated_jaccard, exact_jaccard

log = logging.getLogger("tinyfoundry.dedup")

KEPT, EXACT, NEAR = "kept", "exact_duplicate", "near_duplicate"


@dataclass
class Corpus:
    """Per-document facts gathered on the first read, indexed by reading order (the ordinal)."""

    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    shingles: list[int] = field(default_factory=list)
    sig_batches: list[np.ndarray] = field(default_factory=list)
    """Signatures as the workers returned them, (batch, num_perm) uint32 each: no per-document array object."""
    shingle_sets: list[np.ndarray] = field(default_factory=list)
    """Sorted distinct shingle hashes per document; only filled for `verify: exact`."""
    skipped: collections.Counter = field(default_factory=collections.Counter)

    def signatures(self, num_perm: int) -> np.ndarray:
        return np.concatenate(self.sig_batches) if self.sig_batches else np.zeros((0, num_perm), np.uint32)


def _bad(reason: str, where: str, raw: str, source: str) -> dict:
    return {"text": raw, "id": where, "metadata": {"source": source, "reject_reason": reason}}


def input_folders(inputs: dict[str, Path], skipped: collections.Counter) -> Iterator[tuple[str, Path]]:
    """(name, folder) of each input, by name; a missing folder is logged and counted (`missing_input`)."""
    for name in sorted(inputs):
        folder = Path(inputs[name])
        if not folder.is_dir():
            log.warning("input %s: folder %s does not exist; nothing read from it", name, folder)
            skipped["missing_input"] += 1
            continue
        if not doc_files(folder):
            log.warning("input %s: no *.jsonl.gz shards under %s", name, folder)
        yield name, folder


def read_inputs(inputs: dict[str, Path], skipped: collections.Counter | None = None) -> Iterator[tuple[str, dict]]:
    """Yield ("ok", doc) for each valid document and ("malformed", reject) for each bad line, in a fixed
    order (inputs by name, files sorted, lines in order). Never raises on bad content."""
    skipped = collections.Counter() if skipped is None else skipped
    for name, folder in input_folders(inputs, skipped):
        for problem, doc, where, raw in scan_docs(folder, skipped=skipped):
            if problem:
                yield "malformed", _bad(problem, f"{name}/{where}", raw, name)
                continue
            doc.setdefault("metadata", {}).setdefault("source", name)
            yield "ok", doc


def _batches(inputs, corpus: Corpus, size: int, pending: collections.deque) -> Iterator[list[str]]:
    texts: list[str] = []
    for kind, doc in read_inputs(inputs, corpus.skipped):
        if kind != "ok":
            corpus.skipped[doc["metadata"]["reject_reason"]] += 1
            continue
        pending.append((str(doc["id"]), str(doc["metadata"].get("source")), len(doc["text"])))
        texts.append(doc["text"])
        if len(texts) == size:
            yield texts
            texts = []
    if texts:
        yield texts


def compute_signatures(inputs: dict[str, Path], hasher: Hasher, processes: int, batch_docs: int,
                       keep_shingles: bool = False) -> Corpus:
    """First read: ids, sources, lengths, digests and signatures of every valid document."""
    corpus = Corpus()
    pending: collections.deque = collections.deque()  # (id, source, length) per document, filled by the reader
    batches = _batches(inputs, corpus, batch_docs, pending)
    pool = mp.get_context("spawn").Pool(processes) if processes > 1 else None
    try:
        results = (_in_pool(pool, hasher, batches, 2 * processes, keep_shingles) if pool
                   else (hasher.batch(t, keep_shingles) for t in batches))
        with tqdm(desc="dedup: signatures", unit="doc", mininterval=2, disable=None) as bar:
            for sigs, digests, counts, sets in results:
                corpus.sig_batches.append(sigs)
                corpus.shingle_sets.extend(sets or ())
                for digest, count in zip(digests, counts):
                    doc_id, source, length = pending.popleft()
                    corpus.ids.append(doc_id)
                    corpus.sources.append(source)
                    corpus.lengths.append(length)
                    corpus.digests.append(digest)
                    corpus.shingles.append(int(count))
                bar.update(len(digests))
    finally:
        if pool:
            pool.close()
            pool.join()
    return corpus


def _in_pool(pool, hasher: Hasher, batches: Iterator[list[str]], window: int, keep_shingles: bool):
    """Results in submission order with at most `window` batches in flight (`imap` would read the whole
    corpus into its task queue at once)."""
    inflight: collections.deque = collections.deque()
    for texts in batches:
        inflight.append(pool.apply_async(_batch_worker, ((hasher, texts, keep_shingles),)))
        if len(inflight) >= window:
            yield inflight.popleft().get()
    while inflight:
        yield inflight.popleft().get()


def rank_order(corpus: Corpus, keep_priority: list[str]) -> np.ndarray:
    """Ordinals best-first: source order of `keep_priority` (unlisted sources last), longer, smaller id."""
    rank = {s: i for i, s in enumerate(keep_priority)}
    return np.array(sorted(range(len(corpus.ids)), key=lambda o: (
        rank.get(corpus.sources[o], len(rank)), -corpus.lengths[o], corpus.ids[o], o)), dtype=np.int64)


@dataclass
class Assignment:
    """Per ordinal: the ordinal it duplicates (itself when kept), why, and the estimated Jaccard."""

    keeper: np.ndarray
    reason: list[str]
    jaccard: np.ndarray
    stats: dict


def assign(corpus: Corpus, cfg, lsh=None) -> Assignment:
    """Exact then near-duplicate assignment (steps 3–5 of the module docstring)."""
    n = len(corpus.ids)
    keeper = np.arange(n, dtype=np.int64)
    reason = [KEPT] * n
    jaccard = np.ones(n, dtype=np.float64)
    order = rank_order(corpus, cfg.keep_priority)

    first_with: dict[bytes, int] = {}
    candidates: list[int] = []  # exact-unique ordinals with shingles, best-first
    for o in order.tolist():
        rep = first_with.setdefault(corpus.digests[o], o)
        if rep != o:
            keeper[o], reason[o] = rep, EXACT
        elif corpus.shingles[o] > 0:
            candidates.append(o)
    exact = n - len(first_with)

    sigs = corpus.signatures(cfg.num_perm)[np.array(candidates, dtype=np.int64)]
    bands = banded_signatures(sigs, cfg)
    own_index = lsh is None
    lsh = make_index(cfg) if own_index else lsh
    checked = verified = 0
    t0 = time.time()
    try:
        def minhash(i: int) -> LeanMinHash:  # the index only bands the values; seed and scheme are labels
            return LeanMinHash(seed=cfg.seed, hashvalues=bands[i], scheme="affine32")

        with lsh.insertion_session(buffer_size=10_000) as session:
            for i in tqdm(range(len(candidates)), desc="dedup: LSH insert", unit="doc", mininterval=2, disable=None):
                session.insert(i, minhash(i), check_duplication=False)
        index_bytes = lsh.nbytes() if isinstance(lsh, CompactMinHashLSH) else None
        claimed = np.full(len(candidates), -1, dtype=np.int64)
        for i in tqdm(range(len(candidates)), desc="dedup: LSH query", unit="doc", mininterval=2, disable=None):
            if claimed[i] >= 0:
                continue
            found = np.array(sorted(c for c in lsh.query(minhash(i)) if c > i and claimed[c] < 0), dtype=np.int64)
            if found.size == 0:
                continue
            if cfg.verify == "exact":
                sets = corpus.shingle_sets
                est = exact_jaccard(sets[candidates[i]], [sets[candidates[c]] for c in found.tolist()])
            else:
                est = estimated_jaccard(sigs[i], sigs[found])
            hit = est >= cfg.verify_threshold
            checked += int(found.size)
            verified += int(hit.sum())
            claimed[found[hit]] = i
            for c, e in zip(found[hit].tolist(), est[hit].tolist()):
                o = candidates[c]
                keeper[o], reason[o], jaccard[o] = candidates[i], NEAR, e
    finally:
        if own_index:
            drop_index(lsh)
    stats = {"exact_dups": exact, "near_dups": verified, "lsh_candidate_pairs": checked,
             "lsh_rejected_pairs": checked - verified, "lsh_docs": len(candidates),
             "lsh_seconds": round(time.time() - t0, 3)}
    if index_bytes is not None:
        stats["index_bytes_per_doc"] = round(index_bytes / max(len(candidates), 1), 1)
    return Assignment(keeper, reason, jaccard, stats)


class ShardWriter:
    """Rolling gzip JSONL shards `<folder>/<prefix>-00000.jsonl.gz` with deterministic bytes (mtime=0)."""

    def __init__(self, folder: Path, prefix: str, shard_docs: int):
        self.folder, self.prefix, self.shard_docs = folder, prefix, shard_docs
        self.n = 0
        self._file = self._gz = None

    def write(self, doc: dict) -> None:
        if self.n % self.shard_docs == 0:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.folder / f"{self.prefix}-{self.n // self.shard_docs:05d}.jsonl.gz", "wb")
            self._gz = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0, compresslevel=6)
        self._gz.write((json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
        self.n += 1

    def close(self) -> None:
        if self._gz:
            self._gz.close()
            self._file.close()
            self._gz = self._file = None


def write_outputs(inputs, corpus: Corpus, a: Assignment, stage: Path, shard_docs: int) -> dict[str, int]:
    """Second read: kept → docs/<source>-*.jsonl.gz, removed and malformed → rejects/, clusters file."""
    writers: dict[tuple[str, str], ShardWriter] = {}

    def out(sub: str, name: str) -> ShardWriter:
        if (sub, name) not in writers:
            writers[(sub, name)] = ShardWriter(stage / sub, name, shard_docs)
        return writers[(sub, name)]

    o = 0
    kept_by_source: collections.Counter = collections.Counter()
    for kind, doc in read_inputs(inputs):
        if kind != "ok":
            out(REJECTS, "malformed").write(doc)
            continue
        if a.reason[o] == KEPT:
            out(DOCS, _safe(corpus.sources[o])).write(doc)
            kept_by_source[corpus.sources[o]] += 1
        else:
            k = int(a.keeper[o])
            doc["metadata"].update(reject_reason=a.reason[o], duplicate_of=corpus.ids[k],
                                   duplicate_source=corpus.sources[k], jaccard=round(float(a.jaccard[o]), 4))
            out(REJECTS, a.reason[o]).write(doc)
        o += 1
    for w in writers.values():
        w.close()
    if o != len(corpus.ids):  # the inputs changed between the two reads
        raise RuntimeError(f"inputs changed while dedup ran: {len(corpus.ids)} documents, then {o}")
    (stage / DOCS).mkdir(exist_ok=True)
    (stage / REJECTS).mkdir(exist_ok=True)
    clusters = write_clusters(stage / "clusters.jsonl.gz", corpus, a)
    return {"clusters": clusters, "kept_by_source": dict(sorted(kept_by_source.items()))}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "unknown"


def cluster_members(a: Assignment) -> dict[int, list[int]]:
    """Kept ordinal → its removed ordinals (only clusters with at least one removed member)."""
    members: dict[int, list[int]] = collections.defaultdict(list)
    for o, k in enumerate(a.keeper.tolist()):
        if k != o:
            members[k].append(o)
    return members


def write_clusters(path: Path, corpus: Corpus, a: Assignment) -> int:
    """One line per member of each cluster: id, source, cluster number, kept id, estimated Jaccard, role."""
    members = cluster_members(a)
    keepers = sorted(members, key=lambda k: (corpus.ids[k], k))
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for cluster, k in enumerate(keepers):
            rows = [(k, KEPT, 1.0)] + [(o, a.reason[o], float(a.jaccard[o]))
                                       for o in sorted(members[k], key=lambda o: (corpus.ids[o], o))]
            for o, role, jac in rows:
                gz.write((json.dumps({"id": corpus.ids[o], "source": corpus.sources[o], "cluster": cluster,
                                      "kept": corpus.ids[k], "jaccard": round(jac, 4), "role": role},
                                     sort_keys=True) + "\n").encode("utf-8"))
    return len(keepers)


def _peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(children, 1)


def run_dedup(cfg, inputs: dict[str, Path], output: Path) -> dict:
    if cfg.engine == "datatrove":
        from .datatrove_engine import run_datatrove_dedup

        return run_datatrove_dedup(cfg, inputs, output)
    started = time.time()
    hasher = Hasher(cfg.shingle_words, cfg.num_perm, cfg.seed)
    log.info("dedup: %d-word shingles, %d permutations, %d bands x %d rows (LSH threshold ~%.2f) in %d "
             "layout(s), verify at %s Jaccard >= %.2f, index in %s", cfg.shingle_words, cfg.num_perm, cfg.bands,
             cfg.rows, cfg.lsh_threshold(), cfg.band_layouts, cfg.verify + ("d" if cfg.verify == "estimate" else ""),
             cfg.verify_threshold, cfg.storage)
    corpus = compute_signatures(inputs, hasher, cfg.processes, cfg.batch_docs, cfg.verify == "exact")
    n = len(corpus.ids)
    sig_seconds = time.time() - started
    log.info("dedup: %d documents read and signed in %.1f s (%s skipped)", n, sig_seconds,
             dict(corpus.skipped) or "none")
    if corpus.skipped:
        log.warning("dedup: skipped inputs by reason: %s (malformed lines are in rejects/malformed-*)",
                    dict(corpus.skipped))
    dup_ids = n - len(set(corpus.ids))
    if dup_ids:
        log.warning("dedup: %d documents share an id with another document; clusters name them by id", dup_ids)

    a = assign(corpus, cfg)
    with atomic_dir(output, resume=False) as stage:
        written = write_outputs(inputs, corpus, a, stage, cfg.shard_docs)
    kept = sum(r == KEPT for r in a.reason)
    seconds = time.time() - started
    own_rss, workers_rss = _peak_rss_mb()
    by_source = collections.Counter(corpus.sources)
    stats = {
        "docs_in": n, "exact_dups": a.stats["exact_dups"], "near_dups": a.stats["near_dups"],
        "clusters": written["clusters"], "kept": kept, "docs_per_s": round(n / max(seconds, 1e-9), 1),
        "peak_rss_mb": own_rss, "workers_peak_rss_mb": workers_rss,
        "skipped": sum(corpus.skipped.values()), "skipped_by_reason": dict(sorted(corpus.skipped.items())),
        "duplicate_ids": dup_ids, "signature_seconds": round(sig_seconds, 3),
        "docs_in_by_source": dict(sorted(by_source.items())), "kept_by_source": written["kept_by_source"],
        **{k: v for k, v in a.stats.items() if k not in ("exact_dups", "near_dups")},
    }
    log.info("dedup: %d in, %d exact and %d near duplicates removed in %d clusters, %d kept (%.0f docs/s)",
             n, stats["exact_dups"], stats["near_dups"], stats["clusters"], kept, stats["docs_per_s"])
    return stats
