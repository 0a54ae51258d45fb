"""Dedup speed, quality and memory, side by side in one run: this stage vs datatrove's MinHash pipeline vs a
naive per-shingle `MinHash.update` loop, on the same real-book documents with planted near-duplicates.

    .venv/bin/python benchmarks/dedup.py                 # 4000 docs, index memory at 100k docs
    .venv/bin/python benchmarks/dedup.py --docs 1000 --index-docs 20000 --skip datatrove

Each method runs in its own process (clean peak RSS), single-core (1 worker) so documents/s is per core.
Quality: planted twins at exact word-5-gram Jaccard 0.3–0.95 (tasks/dedup/planted.py); recall over pairs
with J ≥ 0.85, precision over the (removed, kept) pairs a method produced (false when J ≤ 0.5).
Index memory: `--index-docs` random signatures (worst case: no shared buckets) in our compact
MinHashLSH storage vs datasketch's default in-memory storage, RSS growth per document.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOOKS = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", ROOT.parent / "shared" / "data")) / "books"


def _rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


def _current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def method_ours(work: Path, n: int) -> list[int]:
    from tasks.config.dedup import DedupConfig
    from tasks.dedup import run_dedup
    from tasks.docs import iter_docs

    run_dedup(DedupConfig(processes=1), {"web": work / "in"}, work / "ours")
    head = list(range(n))
    for doc in iter_docs(work / "ours", "rejects"):
        head[int(doc["id"][1:])] = int(doc["metadata"]["duplicate_of"][1:])
    return head


def method_naive(work: Path, n: int) -> list[int]:
    """The datasketch tutorial: one `MinHash.update` per shingle, default MinHashLSH, same verification."""
    from datasketch import MinHash, MinHashLSH

    from tasks.dedup.planted import _SPLIT
    from tasks.docs import iter_docs

    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    docs = list(iter_docs(work / "in"))
    order = sorted(range(n), key=lambda i: (-len(docs[i]["text"]), docs[i]["id"]))
    head = list(range(n))
    mins = {}
    for i in order:
        words = [w for w in _SPLIT.split(docs[i]["text"].lower()) if w]
        m = MinHash(num_perm=112, seed=1)
        for j in range(max(len(words) - 4, 1)):
            m.update(" ".join(words[j:j + 5]).encode())
        mins[i] = m
        lsh.insert(i, m)
    rank = {i: r for r, i in enumerate(order)}
    for i in order:  # greedy star clustering, best-first, as the stage does
        if head[i] != i:
            continue
        for c in sorted(lsh.query(mins[i])):
            if rank[c] > rank[i] and head[c] == c and mins[i].jaccard(mins[c]) >= 0.7:
                head[c] = i
    return head


def method_datatrove(work: Path, n: int) -> list[int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from tasks.docs import iter_docs

    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    dt = work / "datatrove"
    reader = JsonlReader(str(work / "in" / "docs"))
    steps = [
        [reader, MinhashDedupSignature(output_folder=str(dt / "sigs"), config=cfg)],
        [MinhashDedupBuckets(input_folder=str(dt / "sigs"), output_folder=str(dt / "buckets"), config=cfg)],
        [MinhashDedupCluster(input_folder=str(dt / "buckets"), output_folder=str(dt / "clusters"), config=cfg,
                             save_cluster_id=True)],
        [JsonlReader(str(work / "in" / "docs")),
         MinhashDedupFilter(input_folder=str(dt / "clusters"), load_cluster_ids=True,
                            exclusion_writer=JsonlWriter(str(dt / "removed"))),
         JsonlWriter(str(dt / "kept"))],
    ]
    for i, pipeline in enumerate(steps):
        tasks = cfg.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(dt / f"logs{i}")).run()
    clusters: dict[int, list[tuple[int, bool]]] = {}
    for sub, removed in (("kept", False), ("removed", True)):
        for doc in iter_docs(dt / sub):
            cid = doc["metadata"].get("minhash_cluster_id", -1)
            if cid != -1:
                clusters.setdefault(cid, []).append((int(doc["id"][1:]), removed))
    head = list(range(n))
    for members in clusters.values():
        keep = [i for i, removed in members if not removed]
        for i, removed in members:
            if removed and keep:
                head[i] = keep[0]
    return head


def method_index(work: Path, n: int, kind: str) -> dict:
    import numpy as np
    from datasketch import LeanMinHash, MinHashLSH

    from tasks.dedup.lsh import CompactMinHashLSH

    sigs = np.random.default_rng(0).integers(0, 2**32, size=(n, 112), dtype=np.uint32)
    minhashes = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in sigs]
    before = _current_rss()
    lsh = CompactMinHashLSH(112, (14, 8)) if kind == "compact" else MinHashLSH(num_perm=112, params=(14, 8))
    t0 = time.time()
    with lsh.insertion_session() as s:
        for i, m in enumerate(minhashes):
            s.insert(i, m, check_duplication=False)
    lsh.query(minhashes[0])  # the compact storage sorts its buffers on the first query
    insert_s = time.time() - t0
    t0 = time.time()
    hits = sum(len(lsh.query(m)) for m in minhashes[:5000])
    query_s = time.time() - t0
    out = {"rss_bytes_per_doc": (_current_rss() - before) / n, "insert_per_s": n / insert_s,
           "query_per_s": min(n, 5000) / query_s, "hits": hits}
    if kind == "compact":
        out["array_bytes_per_doc"] = lsh.nbytes() / n
    return out


def child(args) -> None:
    work, n = Path(args.work), args.n
    import datasketch  # noqa: F401  (imports are not part of the timing)
    if args.method == "ours":
        import tasks.dedup  # noqa: F401
    if args.method == "datatrove":
        import datatrove.pipeline.dedup.minhash  # noqa: F401
    t0 = time.time()
    if args.method.startswith("index-"):
        print(json.dumps(method_index(work, n, args.method.split("-", 1)[1])))
        return
    head = {"ours": method_ours, "naive": method_naive, "datatrove": method_datatrove}[args.method](work, n)
    print(json.dumps({"seconds": time.time() - t0, "head": head, "peak_rss_mb": _rss_mb()}))


def run_child(method: str, work: Path, n: int) -> dict:
    env = {**os.environ, "TINYFOUNDRY_LOG_LEVEL": "WARNING", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--work", str(work), "--n", str(n)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000, help="documents (half originals, half planted twins)")
    parser.add_argument("--index-docs", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["datatrove", "naive", "index"])
    parser.add_argument("--child"), parser.add_argument("--work"), parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if args.child:
        args.method = args.child
        return child(args)

    from tasks.dedup.planted import book_passages, plant, score
    from tasks.docs import write_docs

    t0 = time.time()
    texts, pairs = plant(book_passages(BOOKS, args.docs // 2, seed=11), lo=0.3, hi=0.95, seed=11)
    n = len(texts)
    print(f"corpus: {n} documents ({n // 2} book passages + one planted twin each), "
          f"{sum(map(len, texts)) / n:.0f} chars/doc mean; built in {time.time() - t0:.0f} s")
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        work = Path(tmp)
        write_docs(work / "in" / "docs" / "00000.jsonl.gz",
                   [{"text": t, "id": f"d{i}", "metadata": {"source": "web"}} for i, t in enumerate(texts)])
        rows = {}
        for method in ("ours", "datatrove", "naive"):
            if method in args.skip:
                continue
            r = run_child(method, work, n)
            q = score(texts, pairs, r["head"])
            rows[method] = {"docs_per_s_core": n / r["seconds"], "recall": q["recall"], "precision": q["precision"],
                            "fpr": q["fpr"], "peak_rss_mb": r["peak_rss_mb"]}
            print(f"  {method}: {r['seconds']:.1f} s", flush=True)
        expected = sum(1 - (1 - p.jaccard ** 8) ** 14 for p in pairs if p.jaccard >= 0.85) / q["positives"]
        print(f"\nplanted pairs: {q['positives']} with J >= 0.85, {q['negatives']} with J <= 0.5; "
              f"expected recall of 14x8 banding on them: {expected:.3f} (any MinHash family)")
        base = rows.get("datatrove")
        print(f"{'method':<12}{'docs/s/core':>12}{'vs datatrove':>14}{'recall':>9}{'precision':>11}{'fpr':>8}"
              f"{'peak RSS MB':>13}")
        for method, r in rows.items():
            ratio = f"{r['docs_per_s_core'] / base['docs_per_s_core']:.2f}x" if base else "-"
            print(f"{method:<12}{r['docs_per_s_core']:>12.0f}{ratio:>14}{r['recall']:>9.3f}{r['precision']:>11.4f}"
                  f"{r['fpr']:>8.3f}{r['peak_rss_mb']:>13.0f}")

        if "index" not in args.skip:
            print(f"\nLSH index memory, {args.index_docs} documents (random signatures: no shared buckets)")
            compact = run_child("index-compact", work, args.index_docs)
            default = run_child("index-dict", work, args.index_docs)
            print(f"{'storage':<26}{'RSS bytes/doc':>14}{'array bytes/doc':>17}{'inserts/s':>11}{'queries/s':>11}")
            for name, r in (("ours (ArrayBucketStorage)", compact), ("datasketch dict storage", default)):
                print(f"{name:<26}{r['rss_bytes_per_doc']:>14.0f}{r.get('array_bytes_per_doc', float('nan')):>17.0f}"
                      f"{r['insert_per_s']:>11.0f}{r['query_per_s']:>11.0f}")
            print(f"ratio dict/ours RSS: {default['rss_bytes_per_doc'] / compact['rss_bytes_per_doc']:.1f}x")


if __name__ == "__main__":
    main()
