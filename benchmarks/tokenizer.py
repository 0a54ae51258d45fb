"""Tokenizer training time: rustbpe (ours) vs the HF `tokenizers` BPE trainer, same corpus, same vocab,
same GPT-4 split regex + byte-level alphabet. Target: ours ≤ 0.5× the HF time.

    python benchmarks/tokenizer.py [--mb 10] [--vocab 8192] [--repeats 3]

Corpus: real text from ../shared/data (Gutenberg books, documentation pages) + Python stdlib source,
held in memory so that both trainers see exactly the same strings and no I/O is timed.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config.tokenizer import GPT4_SPLIT  # noqa: E402
from tests.test_tokenizer_helpers import book_docs, code_docs, web_docs  # noqa: E402

SHARED = Path(os.environ.get("TINYFOUNDRY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def corpus(mb: float) -> list[str]:
    n = int(mb * 1e6)
    docs = web_docs(SHARED, int(0.35 * n)) + book_docs(SHARED, int(0.35 * n)) + code_docs(int(0.3 * n))
    return [d["text"] for d in docs]


def train_rustbpe(texts: list[str], vocab: int) -> int:
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), vocab, pattern=GPT4_SPLIT)
    return tok.vocab_size


def train_hf(texts: list[str], vocab: int) -> int:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.get_vocab_size()


def timed(fn, *args, repeats: int) -> tuple[float, int]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.getLogger("rustbpe").setLevel(logging.WARNING)
    texts = corpus(args.mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    ours, v_ours = timed(train_rustbpe, texts, args.vocab, repeats=args.repeats)
    hf, v_hf = timed(train_hf, texts, args.vocab, repeats=args.repeats)
    print(f"corpus {mb:.1f} MB, {len(texts)} documents, vocab {args.vocab}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats}")
    print(f"{'trainer':<28}{'seconds':>10}{'vocab':>8}{'ratio vs HF':>14}")
    print(f"{'rustbpe (ours)':<28}{ours:>10.2f}{v_ours:>8}{ours / hf:>13.2f}x")
    print(f"{'HF tokenizers BpeTrainer':<28}{hf:>10.2f}{v_hf:>8}{1.0:>13.2f}x")
    print(f"target: ours <= 0.5x HF -> {'MET' if ours / hf <= 0.5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
