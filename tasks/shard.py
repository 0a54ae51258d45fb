"""shard stage: mixed documents → fixed-size binary token shards + manifest (format `tinyfoundry-shards-v1`).

Format (what the training loader and evaluation read):
- `train_0000.bin`, ..., `val_0000.bin`, ...: raw little-endian token arrays, no header; np.uint16 when the
  vocabulary has at most 65,536 ids, else np.uint32. Each document is prefixed with the end-of-text token,
  so a shard is `EOT doc EOT doc ...`; every shard but the last of a split holds exactly `shard_tokens`.
  Documents run across shard boundaries (the stream is contiguous over a split's shards in order).
- `manifest.json`: {"format", "dtype", "vocab_size", "eot_id", "tokenizer_sha256", "shards": [{"file",
  "split", "tokens", "sha256", "tokens_per_source"}], "splits": {"train"|"val": {"tokens", "docs", "bytes",
  "tokens_per_source"}}}. Tokens of a document (and its EOT) count for the document's source.
- `val_docs/<source>.jsonl.gz`: the held-out validation documents' text per source (per-source bits/byte).

Training documents come from `<docs>/docs` in the order of `<docs>/order.npy` (the mix stage's plan; a
document repeated by the mix is encoded once and copied); without a plan each document is used once in
file order. Validation documents come from `<docs>/val` (the mix's hold-out), each once.
Encoding: tiktoken's Rust core in a thread pool (it releases the GIL), straight into numpy buffers
(`encode_to_numpy`), while the main thread decompresses and parses the next batch of documents.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from tasks.atomic import atomic_dir
from tasks.config.shard import ShardConfig
from tasks.docs import write_docs
from tasks.docs import read_docs
from tasks.tokenizer import META_FILE, load_tokenizer

log = logging.getLogger("tinyfoundry.shard")

FORMAT = "tinyfoundry-shards-v1"
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _batches(docs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_docs(enc, docs: Iterator[dict], cfg: ShardConfig, desc: str, on_doc=None):
    """Encode documents (EOT-prefixed) into one token array. Returns (tokens, offsets[n+1], sources[n], bytes[n])."""
    dtype = token_dtype(enc.n_vocab)
    eot = np.array([enc.eot_token], dtype=np.uint32)

    def encode(text: str) -> np.ndarray:
        # allowed_special=set(): special-token strings inside documents are encoded as plain text
        return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    parts, lengths, sources, nbytes = [], [], [], []
    with ThreadPoolExecutor(cfg.threads) as pool, tqdm(desc=desc, unit="doc", disable=None) as bar:
        pending = None  # the batch being encoded while the next one is read
        for batch in _batches(docs, cfg.batch_docs):
            futures = [pool.submit(encode, d["text"]) for d in batch]
            if pending is not None:
                _collect(*pending, parts, lengths, sources, nbytes, eot, dtype, on_doc, bar)
            pending = (batch, futures)
        if pending is not None:
            _collect(*pending, parts, lengths, sources, nbytes, eot, dtype, on_doc, bar)
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return tokens, offsets, sources, nbytes


def _collect(batch, futures, parts, lengths, sources, nbytes, eot, dtype, on_doc, bar):
    for doc, fut in zip(batch, futures):
        ids = fut.result()
        parts.append(eot.astype(dtype))
        parts.append(ids.astype(dtype))
        lengths.append(len(ids) + 1)
        sources.append(doc["metadata"]["source"])
        nbytes.append(len(doc["text"].encode()))
        if on_doc is not None:
            on_doc(doc)
    bar.update(len(batch))


class ShardWriter:
    """Writes a split's token stream as `<split>_NNNN.bin` files of exactly `shard_tokens` tokens (last: rest)."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype: np.dtype):
        self.folder, self.split, self.size, self.dtype = folder, split, shard_tokens, dtype
        self.buf = np.empty(shard_tokens, dtype=dtype)
        self.fill = 0
        self.per_source: Counter = Counter()
        self.shards: list[dict] = []

    def add(self, tokens: np.ndarray, source: str) -> None:
        while len(tokens):
            n = min(len(tokens), self.size - self.fill)
            self.buf[self.fill:self.fill + n] = tokens[:n]
            self.fill += n
            self.per_source[source] += n
            tokens = tokens[n:]
            if self.fill == self.size:
                self.flush()

    def flush(self) -> None:
        if not self.fill:
            return
        data = self.buf[:self.fill].astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        name = f"{self.split}_{len(self.shards):04d}.bin"
        (self.folder / name).write_bytes(data)
        self.shards.append({"file": name, "split": self.split, "tokens": self.fill,
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "tokens_per_source": dict(sorted(self.per_source.items()))})
        self.fill = 0
        self.per_source = Counter()


def run_shard(cfg: ShardConfig, inputs: dict[str, Path], output: Path) -> dict:
    docs_dir, tok_dir = inputs["docs"], inputs["tokenizer"]
    enc = load_tokenizer(tok_dir)
    tok_meta = json.loads((tok_dir / META_FILE).read_text())
    dtype = token_dtype(enc.n_vocab)
    skipped: Counter = Counter()
    started = time.perf_counter()

    with atomic_dir(output, resume=False) as stage:
        # training split
        tokens, offsets, sources, nbytes = encode_docs(enc, read_docs(docs_dir, "docs", skipped), cfg,
                                                       "shard: encoding train docs")
        order_file = docs_dir / "order.npy"
        order = np.load(order_file) if order_file.exists() else np.arange(len(sources))
        if len(order) and (order.min() < 0 or order.max() >= len(sources)):
            raise ValueError(f"{order_file} refers to document {order.max()} but {docs_dir}/docs holds "
                             f"{len(sources)} readable documents (was data/mix written by another run?)")
        train = ShardWriter(stage, "train", cfg.shard_tokens, dtype)
        for i in order:
            train.add(tokens[offsets[i]:offsets[i + 1]], sources[i])
        train.flush()
        train_split = {"tokens": int(sum(s["tokens"] for s in train.shards)), "docs": int(len(order)),
                       "bytes": int(sum(nbytes[i] for i in order)),
                       "tokens_per_source": _sum_sources(train.shards)}
        del tokens

        # validation split: each held-out document once, text kept per source for bits/byte
        val_text: dict[str, list[dict]] = defaultdict(list)
        val_docs = read_docs(docs_dir, "val", skipped) if (docs_dir / "val").is_dir() else iter(())
        vtokens, voffsets, vsources, vbytes = encode_docs(
            enc, val_docs, cfg, "shard: encoding val docs",
            on_doc=lambda d: val_text[d["metadata"]["source"]].append(
                {"text": d["text"], "id": d["id"], "metadata": {k: v for k, v in d["metadata"].items() if k != "mix"}}))
        val = ShardWriter(stage, "val", cfg.shard_tokens, dtype)
        for i, source in enumerate(vsources):
            val.add(vtokens[voffsets[i]:voffsets[i + 1]], source)
        val.flush()
        for source, docs in sorted(val_text.items()):
            write_docs(stage / "val_docs" / f"{source}.jsonl.gz", docs)
        val_split = {"tokens": int(len(vtokens)), "docs": len(vsources), "bytes": int(sum(vbytes)),
                     "tokens_per_source": _sum_sources(val.shards)}

        manifest = {"format": FORMAT, "dtype": dtype.name, "vocab_size": enc.n_vocab, "eot_id": enc.eot_token,
                    "tokenizer_sha256": tok_meta["sha256"], "shards": train.shards + val.shards,
                    "splits": {"train": train_split, "val": val_split}}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    seconds = time.perf_counter() - started
    distinct_bytes = sum(nbytes) + sum(vbytes)
    total = max(train_split["tokens"], 1)
    if skipped:
        log.warning("skipped documents: %s", dict(skipped))
    log.info("wrote %d train + %d val shards, %d + %d tokens (%s), %.1f MB of text/s encoded",
             len(train.shards), len(val.shards), train_split["tokens"], val_split["tokens"], dtype.name,
             distinct_bytes / 1e6 / seconds)
    return {"train": train_split, "val": val_split, "train_shards": len(train.shards),
            "val_shards": len(val.shards), "dtype": dtype.name,
            "train_token_shares": {s: round(n / total, 6) for s, n in train_split["tokens_per_source"].items()},
            "encoded_bytes": distinct_bytes, "mb_per_s": round(distinct_bytes / 1e6 / seconds, 3),
            "skipped": dict(skipped)}


def _sum_sources(shards: list[dict]) -> dict[str, int]:
    out: Counter = Counter()
    for s in shards:
        out.update(s["tokens_per_source"])
    return dict(sorted(out.items()))
