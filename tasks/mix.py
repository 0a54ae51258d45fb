"""mix stage: choose what the model trains on — natural language : code at 7:3 by tokens (TinyLlama).

Every document is tokenized with the trained tokenizer (exact counts, +1 for the end-of-text token that
precedes it in the shards). A hash of the document id holds out `val_fraction` of the documents for
validation (never repeated). Each source then gets its target share of the training tokens: whole
epochs of the source plus a seeded subset of its documents for the remainder, so no source is repeated
more than `max_repeats` times on average. Natural-language sources are chosen first; the code share is
then fitted to the natural-language tokens actually chosen, so the realised ratio lands on target even
when books are large, coarse documents.

Output (`data/mix/`), read by the shard stage:
- `docs/part_*.jsonl.gz` — the distinct training documents, each with `metadata.mix = {"copies", "tokens"}`.
- `order.npy` — int64 indices into those documents (in file order), one per copy, seeded shuffle: the
  order of documents in the training shards. A plan rather than repeated text, so repeats cost nothing.
- `val/part_00000.jsonl.gz` — the held-out validation documents.
- `plan.json` — the numbers in metrics/mix.json.
"""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.atomic import atomic_dir
from tasks.config.mix import MixConfig
from tasks.docs import write_docs
from tasks.docs import read_docs
from tasks.tokenizer import hash_unit, load_tokenizer

log = logging.getLogger("tinyfoundry.mix")

VAL_SALT = "validation"


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic train/validation split by a hash of the document id (independent of any seed).
    `min_val_docs` may add, per source, the documents with the next-lowest hashes."""
    return fraction > 0 and hash_unit(str(doc_id), VAL_SALT) < fraction


def count_tokens(enc, texts: list[str], threads: int, batch: int = 256) -> np.ndarray:
    counts = np.zeros(len(texts), dtype=np.int64)
    with tqdm(total=len(texts), desc="mix: counting tokens", unit="doc", disable=None) as bar:
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            counts[i:i + len(chunk)] = [len(t) for t in enc.encode_ordinary_batch(chunk, num_threads=threads)]
            bar.update(len(chunk))
    return counts + 1  # the end-of-text token prefixed to each document


def choose(tokens: np.ndarray, keys: np.ndarray, target: float, cap: float) -> np.ndarray:
    """Copies per document so that sum(copies * tokens) is as close to `target` as the documents allow
    without exceeding `cap`: whole epochs, then documents in seeded `keys` order, each taken if it
    brings the total closer."""
    total = int(tokens.sum())
    epochs = int(min(target, cap) // total)
    copies = np.full(len(tokens), epochs, dtype=np.int64)
    rest, room = target - epochs * total, cap - epochs * total
    for i in np.argsort(keys, kind="stable"):
        if rest <= 0:
            break
        if tokens[i] <= 2 * rest and tokens[i] <= room:  # closer to the target, still under the cap
            copies[i] += 1
            rest -= tokens[i]
            room -= tokens[i]
    return copies


def plan(cfg: MixConfig, tokens: dict[str, np.ndarray], keys: dict[str, np.ndarray]) -> tuple[dict, float]:
    """Copies per document for every source; returns ({source: copies}, mix size N it aimed at)."""
    shares = cfg.source_shares()
    avail = {s: int(tokens[s].sum()) for s in shares}
    cap = {s: cfg.max_repeats * avail[s] for s in shares}
    n_max = min(cap[s] / shares[s] for s in shares)
    n = n_max
    if cfg.total_tokens is not None:
        if cfg.total_tokens > n_max:
            log.warning("total_tokens %d needs more than max_repeats=%.1f of some source; using %d",
                        cfg.total_tokens, cfg.max_repeats, int(n_max))
        n = min(cfg.total_tokens, n_max)
    code, f = cfg.code_source, cfg.code_fraction
    for _ in range(10):  # shrink n until the code needed by the chosen text fits under its cap
        copies = {s: choose(tokens[s], keys[s], n * shares[s], cap[s]) for s in cfg.text_weights}
        text = sum(int((copies[s] * tokens[s]).sum()) for s in copies)
        code_target = text * f / (1 - f)
        if code_target <= cap[code] * (1 + 1e-9):
            break
        n *= 0.999 * cap[code] / code_target
    copies[code] = choose(tokens[code], keys[code], code_target, cap[code])
    return copies, n


def run_mix(cfg: MixConfig, inputs: dict[str, Path], output: Path) -> dict:
    enc = load_tokenizer(inputs["tokenizer"])
    shares = cfg.source_shares()
    skipped: Counter = Counter()
    train: dict[str, list[dict]] = defaultdict(list)
    val: list[dict] = []
    for doc in read_docs(inputs["docs"], skipped=skipped):
        source = doc["metadata"]["source"]
        if source not in shares:
            skipped[f"unweighted_source:{source}"] += 1
            continue
        (val if is_validation(doc["id"], cfg.val_fraction) else train[source]).append(doc)
    if skipped:
        log.warning("skipped documents: %s", dict(skipped))
    for source in sorted(shares):
        have = sum(d["metadata"]["source"] == source for d in val)
        need = min(cfg.min_val_docs - have, len(train[source]) - 1)
        if need > 0:  # the lowest validation hashes: the same documents is_validation would pick first
            train[source].sort(key=lambda d: hash_unit(str(d["id"]), VAL_SALT))
            val.extend(train[source][:need])
            train[source] = train[source][need:]
    missing = [s for s in shares if not train[s]]
    if missing:
        raise ValueError(f"mix: no training documents of source(s) {missing} in {inputs['docs']}; "
                         f"cannot reach the configured shares {shares}")

    tokens, keys = {}, {}
    for source in sorted(shares):
        docs = train[source]
        docs.sort(key=lambda d: str(d["id"]))  # input file order must not matter
        tokens[source] = count_tokens(enc, [d["text"] for d in docs], cfg.threads)
        keys[source] = np.array([hash_unit(str(d["id"]), cfg.seed) for d in docs])
    copies, n_target = plan(cfg, tokens, keys)

    realised = {s: int((copies[s] * tokens[s]).sum()) for s in shares}
    total = sum(realised.values())
    code_share = realised[cfg.code_source] / total
    deviation = (code_share - cfg.code_fraction) / cfg.code_fraction
    within = abs(deviation) <= cfg.tolerance
    (log.info if within else log.warning)(
        "code share %.4f (target %.6f, %+.2f%%) over %d training tokens", code_share, cfg.code_fraction,
        100 * deviation, total)

    chosen = [(s, i) for s in sorted(shares) for i in np.flatnonzero(copies[s])]
    expanded = np.repeat(np.arange(len(chosen)), [copies[s][i] for s, i in chosen])
    order = np.random.default_rng(cfg.seed).permutation(expanded)

    val_tokens = count_tokens(enc, [d["text"] for d in val], cfg.threads) if val else np.zeros(0, np.int64)
    val_order = sorted(range(len(val)), key=lambda j: (val[j]["metadata"]["source"], str(val[j]["id"])))
    stats = {
        "target_code_fraction": cfg.code_fraction,
        "realised_code_fraction": round(code_share, 6),
        "realised_deviation": round(deviation, 6),
        "within_tolerance": within,
        "target_shares": {s: round(v, 6) for s, v in shares.items()},
        "realised_shares": {s: round(v / total, 6) for s, v in realised.items()},
        "tokens_per_source": realised,
        "available_tokens_per_source": {s: int(tokens[s].sum()) for s in shares},
        "repeats_per_source": {s: round(realised[s] / int(tokens[s].sum()), 4) for s in shares},
        "docs_per_source": {s: int(np.count_nonzero(copies[s])) for s in shares},
        "max_copies_per_source": {s: int(copies[s].max()) for s in shares},
        "train_tokens": total,
        "train_docs": len(order),
        "target_tokens": int(n_target),
        "val_docs": len(val),
        "val_tokens_per_source": dict(sorted(_sum_by_source(val, val_tokens).items())),
        "skipped": dict(skipped),
    }
    with atomic_dir(output, resume=False) as stage:
        for part, start in enumerate(range(0, max(len(chosen), 1), cfg.docs_per_file)):
            rows = chosen[start:start + cfg.docs_per_file]
            write_docs(stage / "docs" / f"part_{part:05d}.jsonl.gz", (
                _with_mix(train[s][i], int(copies[s][i]), int(tokens[s][i])) for s, i in rows))
        np.save(stage / "order.npy", order.astype(np.int64))
        write_docs(stage / "val" / "part_00000.jsonl.gz",
                   (_with_mix(val[j], 1, int(val_tokens[j])) for j in val_order))
        (stage / "plan.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def _sum_by_source(docs: list[dict], tokens: np.ndarray) -> Counter:
    out: Counter = Counter()
    for doc, n in zip(docs, tokens):
        out[doc["metadata"]["source"]] += int(n)
    return out


def _with_mix(doc: dict, copies: int, tokens: int) -> dict:
    return {**doc, "metadata": {**doc["metadata"], "mix": {"copies": copies, "tokens": tokens}}}
