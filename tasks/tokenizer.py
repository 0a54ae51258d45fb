"""tokenizer stage: train a byte-level BPE with rustbpe on a sample of the corpus, encode with tiktoken.

Output folder (`data/tokenizer/`), the format other stages read:

- `tokenizer.tiktoken` — tiktoken's rank file: one `<base64 token bytes> <rank>` line per BPE token,
  ranks 0..n-1 (0..255 are the single bytes). Loadable with `tiktoken.load.load_tiktoken_bpe`.
- `meta.json` — `{"pattern", "special_tokens": {token: id}, "vocab_size", "bpe_ranks", "sha256"}`; special
  tokens take the ids right after the ranks; `sha256` hashes the rank file plus the rest of meta.json.
- `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` — the same tokenizer for
  `transformers.AutoTokenizer.from_pretrained(path)` (byte-level BPE, same split regex, same ids).

Public API: `load_tokenizer(path) -> tiktoken.Encoding`, `token_byte_lengths(enc) -> np.ndarray`.
The training sample is drawn at fixed per-source proportions (the mix's 7:3 text:code by default) so
that the vocabulary serves both kinds of text; documents are picked in a seeded hash order.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import tiktoken

from tasks.atomic import atomic_dir
from tasks.config.tokenizer import TokenizerConfig
from tasks.docs import read_docs

log = logging.getLogger("tinyfoundry.tokenizer")

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "meta.json"
EOT = "<|endoftext|>"


def hash_unit(key: str, seed: int = 0) -> float:
    """A deterministic pseudo-random number in [0, 1) from a string (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


# ----------------------------------------------------------------------------------------------
# the saved format

def write_ranks(ranks: dict[bytes, int], path: Path) -> bytes:
    """tiktoken's rank-file format (tiktoken.load.dump_tiktoken_bpe needs blobfile, so written here)."""
    data = b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n"
                    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))
    path.write_bytes(data)
    return data


def read_ranks(path: Path) -> dict[bytes, int]:
    # not tiktoken.load.load_tiktoken_bpe: it caches by path name in /tmp, which would serve stale ranks
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def meta_sha256(rank_bytes: bytes, meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(rank_bytes + json.dumps(body, sort_keys=True).encode()).hexdigest()


def build_encoding(ranks: dict[bytes, int], pattern: str, specials: list[str], name: str = "tinyfoundry"):
    special_ids = {tok: len(ranks) + i for i, tok in enumerate(specials)}
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ids)


def load_tokenizer(path: str | Path) -> tiktoken.Encoding:
    """The trained tokenizer in `path` (a data/tokenizer folder) as a tiktoken Encoding.
    `enc.eot_token` is the id of <|endoftext|>; `enc.n_vocab` the embedding size."""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    ranks = read_ranks(path / RANKS_FILE)
    specials = sorted(meta["special_tokens"], key=meta["special_tokens"].get)
    enc = build_encoding(ranks, meta["pattern"], specials, name=f"tinyfoundry-{meta['sha256'][:12]}")
    if enc.n_vocab != meta["vocab_size"]:
        raise ValueError(f"{path}: meta.json says vocab_size {meta['vocab_size']} but the files give {enc.n_vocab}")
    return enc


def token_byte_lengths(enc: tiktoken.Encoding) -> np.ndarray:
    """UTF-8 byte length of every token id (0 for special tokens): tokenizer-independent bits per byte."""
    lengths = np.zeros(enc.n_vocab, dtype=np.int32)
    specials = set(enc._special_tokens.values())
    for i in range(enc.n_vocab):
        if i not in specials:
            lengths[i] = len(enc.decode_single_token_bytes(i))
    return lengths


def merge_of(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The one merge that made `token`: BPE on its bytes with only lower ranks leaves exactly two parts."""
    rank, parts = ranks[token], [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"rank {rank} ({token!r}) is not the merge of two lower-ranked tokens")
    return parts[0], parts[1]


def export_hf(out: Path, rank_path: Path, pattern: str, specials: list[str]) -> None:
    """tokenizer.json + configs for transformers: byte-level BPE with the same split regex and merges.

    Merges are recovered exactly, one per token (`merge_of`), as tiktoken would rebuild each token. transformers'
    TikTokenConverter lists every split whose halves are in the vocabulary instead, and its tokenizer.json
    encoded differently from our ranks (316 of 7,935 merges survived for an 8k vocabulary)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = read_ranks(rank_path)
    byte_char = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    merges = [tuple(map(text, merge_of(ranks, t))) for t, _ in sorted(ranks.items(), key=lambda kv: kv[1])
              if len(t) > 1]
    # ignore_merges: a pre-token that is itself in the vocabulary becomes that token, as in tiktoken
    backend = Tokenizer(models.BPE(vocab={text(t): r for t, r in ranks.items()}, merges=merges,
                                   ignore_merges=True, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOT, bos_token=EOT, unk_token=None,
                                 clean_up_tokenization_spaces=False, model_max_length=1_000_000_000)
    hf.save_pretrained(str(out))
    # transformers 5 no longer writes it; older readers (and people) look for it
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": EOT, "eos_token": EOT, "additional_special_tokens": [t for t in specials if t != EOT]},
        indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# the stage

def plan_sample(docs_dir: Path, weights: dict[str, float], sample_bytes: int, eval_bytes: int, seed: int,
                skipped: Counter):
    """Choose training-sample and evaluation documents per source: documents in seeded hash order, taken
    until each source's byte budget is met. Returns ({source: [ids]} sample, {source: [ids]} eval, sizes)."""
    total_w = sum(weights.values())
    sizes: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for doc in read_docs(docs_dir, skipped=skipped):
        source = doc["metadata"]["source"]
        if weights.get(source, 0) <= 0:
            skipped[f"unweighted_source:{source}"] += 1
            continue
        sizes[source].append((hash_unit(str(doc["id"]), seed), str(doc["id"]), len(doc["text"].encode())))
    sample, evalset, available = {}, {}, {}
    for source, w in sorted(weights.items()):
        if w <= 0:
            continue
        rows = sorted(sizes.get(source, []))
        available[source] = sum(r[2] for r in rows)
        budget = sample_bytes * w / total_w
        taken, i = 0, 0
        while i < len(rows) and taken < budget:
            taken += rows[i][2]
            i += 1
        sample[source] = {r[1] for r in rows[:i]}
        if taken < budget:
            log.warning("source %s has only %d bytes, below its sample budget of %d", source, taken, int(budget))
        rest, got = [], 0
        for r in rows[i:]:
            if got >= eval_bytes:
                break
            rest.append(r[1])
            got += r[2]
        evalset[source] = set(rest)
    return sample, evalset, available


def run_tokenizer(cfg: TokenizerConfig, inputs: dict[str, Path], output: Path) -> dict:
    import rustbpe

    docs_dir = inputs["docs"]
    skipped: Counter = Counter()
    sample, evalset, available = plan_sample(docs_dir, cfg.sample_weights, cfg.sample_bytes, cfg.eval_bytes,
                                             cfg.seed, skipped)
    if not any(sample.values()):
        raise ValueError(f"tokenizer: no usable documents of the sources {sorted(cfg.sample_weights)} in {docs_dir}")
    sample_ids = set().union(*sample.values())
    sample_bytes: Counter = Counter()

    def texts() -> Iterator[str]:
        for doc in read_docs(docs_dir):
            if str(doc["id"]) in sample_ids and doc["metadata"]["source"] in sample:
                sample_bytes[doc["metadata"]["source"]] += len(doc["text"].encode())
                yield doc["text"]

    log.info("training BPE (vocab %d incl. %d special) on a %.1f MB sample", cfg.vocab_size,
             len(cfg.special_tokens), cfg.sample_bytes / 1e6)
    logging.getLogger("rustbpe").setLevel(logging.WARNING)  # it logs every 1% of merges
    t0 = time.perf_counter()
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts(), cfg.bpe_vocab_size(), pattern=cfg.split_pattern)
    train_seconds = time.perf_counter() - t0
    ranks = {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}
    log.info("trained %d BPE ranks in %.1f s", len(ranks), train_seconds)

    with atomic_dir(output, resume=False) as stage:
        rank_bytes = write_ranks(ranks, stage / RANKS_FILE)
        meta = {"pattern": cfg.split_pattern, "bpe_ranks": len(ranks), "vocab_size": len(ranks) + len(cfg.special_tokens),
                "special_tokens": {tok: len(ranks) + i for i, tok in enumerate(cfg.special_tokens)}}
        meta["sha256"] = meta_sha256(rank_bytes, meta)
        (stage / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        export_hf(stage, stage / RANKS_FILE, cfg.split_pattern, cfg.special_tokens)
        enc = load_tokenizer(stage)
        stats = evaluate(enc, stage, docs_dir, evalset or sample, sample, cfg)
    return {"vocab_size": enc.n_vocab, "bpe_ranks": len(ranks), "eot_id": enc.eot_token, "sha256": meta["sha256"],
            "train_seconds": round(train_seconds, 3), "sample_bytes": dict(sample_bytes),
            "available_bytes": available, "skipped": dict(skipped), **stats}


def evaluate(enc: tiktoken.Encoding, folder: Path, docs_dir: Path, evalset: dict[str, set], sample: dict[str, set],
             cfg: TokenizerConfig) -> dict:
    """Bytes per token per source on held-out documents (the training sample where none are left), and
    a check that the HF export encodes a slice of them to the same ids."""
    use = {s: (ids if ids else sample.get(s, set())) for s, ids in evalset.items()}
    texts: dict[str, list[str]] = defaultdict(list)
    for doc in read_docs(docs_dir):
        source = doc["metadata"]["source"]
        if str(doc["id"]) in use.get(source, ()):
            texts[source].append(doc["text"])
    bpt, heldout = {}, {}
    for source, docs in sorted(texts.items()):
        n_tokens = sum(len(t) for t in enc.encode_ordinary_batch(docs, num_threads=cfg.threads))
        n_bytes = sum(len(t.encode()) for t in docs)
        bpt[source] = round(n_bytes / max(n_tokens, 1), 4)
        heldout[source] = bool(evalset.get(source))
    stats = {"bytes_per_token": bpt, "bytes_per_token_heldout": heldout}
    if cfg.hf_check_bytes:
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
        checked, mismatched, n_bytes = 0, 0, 0
        per_source = cfg.hf_check_bytes // max(len(texts), 1)
        for source, docs in sorted(texts.items()):
            got = 0
            for text in docs:
                if got >= per_source:
                    break
                text = text[:per_source]
                got += len(text.encode())
                checked += 1
                # HF maps a literal "<|endoftext|>" in text to the special id, like tiktoken's allowed_special="all"
                if hf.encode(text, add_special_tokens=False) != enc.encode(text, allowed_special="all"):
                    mismatched += 1
                    log.warning("HF export encodes a %s document differently from tiktoken", source)
            n_bytes += got
        stats["hf_check"] = {"docs": checked, "bytes": n_bytes, "mismatched_docs": mismatched}
        if mismatched:
            raise RuntimeError(f"the HF tokenizer.json export encodes {mismatched} of {checked} held-out documents "
                               "differently from tiktoken; evaluation through transformers would be wrong")
    return stats
