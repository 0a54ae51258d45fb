"""Dedup speed, quality and memory, side by side in one run: this stage vs datatrove's MinHash pipeline vs a
naive per-shingle `MinHash.update` loop, on the same real-book documents with planted near-duplicates.

    .venv/bin/python benchmarks/dedup.py                 # 4000 docs, MinHash seed 1, index memory at 100k docs
    .venv/bin/python benchmarks/dedup.py --docs 3000 --seeds 1 2 3 4 5 6 7 8 9 10   # docs/dedup.md figures
    .venv/bin/python benchmarks/dedup.py --docs 1000 --index-docs 20000 --skip datatrove

Each method runs in its own process (clean peak RSS), single-core (1 worker) so documents/s is per core.
Methods: ours (the stage, default params: FineWeb's 14x8 banding plus a second layout), ours with one
layout (`band_layouts: 1`, FineWeb's banding alone), datatrove's MinHash pipeline, the naive loop.
Quality: planted twins at exact word-5-gram Jaccard 0.3–0.95 (tasks/dedup/planted.py); recall over pairs
with J ≥ 0.85, precision over the (removed, kept) pairs a method produced (false when J ≤ 0.5).
A banding miss is a coin flip of the MinHash permutations, so `--seeds` repeats every method with other
permutation seeds on the same documents and pools the counts (one run differs by a pair or two).
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


def method_ours(work: Path, n: int, seed: int, band_layouts: int | None = None) -> list[int]:
    from tasks.config.dedup import DedupConfig
    from tasks.dedup import run_dedup
    from tasks.docs import iter_docs

    cfg = DedupConfig(processes=1, seed=seed)
    if band_layouts is not None:
        cfg = cfg.model_copy(update={"band_layouts": band_layouts})
    out = work / f"ours-{cfg.band_layouts}"
    run_dedup(cfg, {"web": work / "in"}, out)
    head = list(range(n))
    for doc in iter_docs(out, "rejects"):
        head[int(doc["id"][1:])] = int(doc["metadata"]["duplicate_of"][1:])
    return head


def method_naive(work: Path, n: int, seed: int) -> list[int]:
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
        m = MinHash(num_perm=112, seed=seed)
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


def method_datatrove(work: Path, n: int, seed: int) -> list[int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from tasks.docs import iter_docs

    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=seed)
    dt = work / f"datatrove-{seed}"
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

    from tasks.config.dedup import DedupConfig
    from tasks.dedup.lsh import banded_signatures, make_index

    sigs = np.random.default_rng(0).integers(0, 2**32, size=(n, 112), dtype=np.uint32)
    cfg = DedupConfig(band_layouts=1 if kind in ("compact-1", "dict") else 2)
    minhashes = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in banded_signatures(sigs, cfg)]
    before = _current_rss()
    lsh = make_index(cfg) if kind.startswith("compact") else MinHashLSH(num_perm=112, params=(14, 8))
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
    if kind.startswith("compact"):
        out["array_bytes_per_doc"] = lsh.nbytes() / n
    return out


def expected_recall(jaccards: list[float], band_layouts: int, trials: int = 4000) -> float:
    """Recall the banding gives in expectation if each of the 112 values matches with probability J
    (the MinHash model; exact for one layout, Monte Carlo over the layouts' shared values otherwise)."""
    import numpy as np

    from tasks.config.dedup import DedupConfig
    from tasks.dedup.lsh import banded_signatures

    cfg = DedupConfig(band_layouts=band_layouts)
    if band_layouts == 1:
        return float(np.mean([1 - (1 - j ** cfg.rows) ** cfg.bands for j in jaccards]))
    rng = np.random.default_rng(0)
    hit = []
    for j in jaccards:
        match = banded_signatures(rng.random((trials, cfg.num_perm)) < j, cfg)
        bands = match.reshape(trials, -1, cfg.rows).all(axis=2)
        hit.append(bands.any(axis=1).mean())
    return float(np.mean(hit))


METHODS = {
    "ours": method_ours,
    "ours-1-layout": lambda work, n, seed: method_ours(work, n, seed, band_layouts=1),
    "datatrove": method_datatrove,
    "naive": method_naive,
}


def child(args) -> None:
    work, n = Path(args.work), args.n
    import datasketch  # noqa: F401  (imports are not part of the timing)
    if args.method.startswith("ours"):
        import tasks.dedup  # noqa: F401
    if args.method == "datatrove":
        import datatrove.pipeline.dedup.minhash  # noqa: F401
    t0 = time.time()
    if args.method.startswith("index-"):
        print(json.dumps(method_index(work, n, args.method.split("-", 1)[1])))
        return
    head = METHODS[args.method](work, n, args.seed)
    print(json.dumps({"seconds": time.time() - t0, "head": head, "peak_rss_mb": _rss_mb()}))


def run_child(method: str, work: Path, n: int, seed: int = 1) -> dict:
    env = {**os.environ, "TINYFOUNDRY_LOG_LEVEL": "WARNING", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--work", str(work), "--n", str(n),
                           "--seed", str(seed)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000, help="documents (half originals, half planted twins)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="MinHash permutation seeds, pooled")
    parser.add_argument("--index-docs", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["datatrove", "naive", "ours-1-layout", "index"])
    parser.add_argument("--child"), parser.add_argument("--work"), parser.add_argument("--n", type=int)
    parser.add_argument("--seed", type=int, default=1)
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
          f"{sum(map(len, texts)) / n:.0f} chars/doc mean; built in {time.time() - t0:.0f} s; "
          f"MinHash seeds {args.seeds}")
    methods = [m for m in METHODS if m not in args.skip]
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        work = Path(tmp)
        write_docs(work / "in" / "docs" / "00000.jsonl.gz",
                   [{"text": t, "id": f"d{i}", "metadata": {"source": "web"}} for i, t in enumerate(texts)])
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for seed in args.seeds:
            for method in methods:
                r = run_child(method, work, n, seed)
                runs[method].append({**score(texts, pairs, r["head"]), "seconds": r["seconds"],
                                     "peak_rss_mb": r["peak_rss_mb"]})
                print(f"  seed {seed} {method}: {r['seconds']:.1f} s, recall {runs[method][-1]['recall']:.3f}",
                      flush=True)
        print_quality_table(runs, n, [p.jaccard for p in pairs if p.jaccard >= 0.85], len(args.seeds))

        if "index" not in args.skip:
            print(f"\nLSH index memory, {args.index_docs} documents (random signatures: no shared buckets)")
            rows = {"ours, 2 layouts (default)": run_child("index-compact-2", work, args.index_docs),
                    "ours, 1 layout": run_child("index-compact-1", work, args.index_docs),
                    "datasketch dict, 1 layout": run_child("index-dict", work, args.index_docs)}
            print(f"{'storage':<27}{'RSS bytes/doc':>14}{'array bytes/doc':>17}{'inserts/s':>11}{'queries/s':>11}")
            for name, r in rows.items():
                print(f"{name:<27}{r['rss_bytes_per_doc']:>14.0f}{r.get('array_bytes_per_doc', float('nan')):>17.0f}"
                      f"{r['insert_per_s']:>11.0f}{r['query_per_s']:>11.0f}")


def print_quality_table(runs: dict[str, list[dict]], n: int, positive_jaccards: list[float], seeds: int) -> None:
    """One row per method, counts pooled over the seeds; per-seed recall after it."""
    print(f"\nplanted pairs per seed: {len(positive_jaccards)} with J >= 0.85; expected recall on them "
          f"(MinHash model, any hash family): 14x8 banding {expected_recall(positive_jaccards, 1):.4f}, "
          f"two layouts {expected_recall(positive_jaccards, 2):.4f}")
    base = runs.get("datatrove")
    base_speed = n * len(base) / sum(r["seconds"] for r in base) if base else None
    print(f"{'method':<15}{'docs/s/core':>12}{'vs datatrove':>14}{'recall':>9}{'missed':>9}{'precision':>11}"
          f"{'fpr':>8}{'peak RSS MB':>13}")
    for method, rs in runs.items():
        total = {k: sum(r[k] for r in rs) for k in ("positives", "found", "flagged", "bad_flagged",
                                                     "negatives", "false_planted", "seconds")}
        speed = n * len(rs) / total["seconds"]
        ratio = f"{speed / base_speed:.2f}x" if base_speed else "-"
        missed = f"{total['positives'] - total['found']}/{total['positives']}"
        precision = 1 - total["bad_flagged"] / total["flagged"] if total["flagged"] else 1.0
        print(f"{method:<15}{speed:>12.0f}{ratio:>14}{total['found'] / max(total['positives'], 1):>9.4f}{missed:>9}"
              f"{precision:>11.4f}{total['false_planted'] / total['negatives']:>8.3f}"
              f"{max(r['peak_rss_mb'] for r in rs):>13.0f}")
    if seeds > 1:
        print("recall per seed: " + "; ".join(
            f"{method} " + " ".join(f"{r['recall']:.3f}" for r in rs) for method, rs in runs.items()))

if __name__ == "__main__":
    main()
