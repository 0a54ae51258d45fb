"""Shard stage throughput vs raw tokenizer encoding, on the same text.

    python benchmarks/shard.py [--mb 10] [--vocab 8192] [--threads 2] [--repeats 3]

- ours: the whole `run_shard` stage (read gzip JSONL, encode, write uint16 shards, sha256, manifest) on a
  docs folder holding the text once;
- tiktoken: `Encoding.encode_ordinary_batch(texts, num_threads=threads)` on the same strings in memory;
- HF tokenizers: `Tokenizer.encode_batch(texts)` of our exported tokenizer.json (all CPUs, rayon).
Targets: ours ≥ 0.9× tiktoken's throughput and ≥ 3× HF's. Throughput = UTF-8 MB of text / second.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.tokenizer import corpus  # noqa: E402
from tasks.config.shard import ShardConfig  # noqa: E402
from tasks.config.tokenizer import TokenizerConfig  # noqa: E402
from tasks.docs import write_docs  # noqa: E402
from tasks.shard import run_shard  # noqa: E402
from tasks.tokenizer import load_tokenizer, run_tokenizer  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    texts = corpus(args.mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    sources = ["web", "books", "code"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = [{"text": t, "id": f"d{i}", "metadata": {"source": sources[i % 3]}} for i, t in enumerate(texts)]
        write_docs(tmp / "in" / "docs" / "00000.jsonl.gz", docs)
        run_tokenizer(TokenizerConfig(vocab_size=args.vocab, sample_bytes=int(mb * 1e6), hf_check_bytes=0,
                                      eval_bytes=0), {"docs": tmp / "in"}, tmp / "tok")
        enc = load_tokenizer(tmp / "tok")
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(tmp / "tok" / "tokenizer.json"))
        cfg = ShardConfig(threads=args.threads)
        n_ours = 0

        def ours():
            nonlocal n_ours
            n_ours = run_shard(cfg, {"docs": tmp / "in", "tokenizer": tmp / "tok"}, tmp / "out")["train"]["tokens"]

        t_ours = best(ours, args.repeats)
        t_tik = best(lambda: enc.encode_ordinary_batch(texts, num_threads=args.threads), args.repeats)
        t_hf = best(lambda: hf.encode_batch(texts, add_special_tokens=False), args.repeats)
    n_tok = sum(map(len, enc.encode_ordinary_batch(texts)))
    assert n_ours == n_tok + len(texts), "shards must hold every token plus one EOT per document"
    print(f"text {mb:.1f} MB, {len(texts)} documents, {n_tok} tokens, vocab {args.vocab}, "
          f"{args.threads} encode threads, {os.cpu_count()} CPUs, median of {args.repeats}")
    print(f"{'what':<46}{'seconds':>9}{'MB/s':>9}{'ours speed / this':>19}")
    rows = [("shard stage (ours: gzip JSONL -> .bin shards)", t_ours),
            (f"tiktoken encode_ordinary_batch ({args.threads} threads)", t_tik),
            ("HF tokenizers encode_batch (all CPUs)", t_hf)]
    for name, t in rows:
        print(f"{name:<46}{t:>9.2f}{mb / t:>9.2f}{t / t_ours:>18.2f}x")
    print(f"targets: ours >= 0.9x tiktoken -> {'MET' if t_tik / t_ours >= 0.9 else 'NOT MET'}; "
          f"ours >= 3x HF -> {'MET' if t_hf / t_ours >= 3 else 'NOT MET'}")


if __name__ == "__main__":
    main()
