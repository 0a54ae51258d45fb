"""Intrinsic evaluation of the exported model: validation loss and bits per byte per source, and greedy
generations from fixed prompts.

Bits per byte = sum of next-token losses (nats) / (ln 2 · UTF-8 bytes of the scored text). Whole held-out
documents are scored (the last one cut at a character boundary to stay near the token budget), so the byte
count is exactly the documents' UTF-8 length and does not depend on the tokenizer. Documents are joined by
the end-of-text token, as in pretraining; predictions of that separator are not scored.
"""
from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

log = logging.getLogger("tinyfoundry.evaluate")


def read_val_docs(path: Path, budget_tokens: int, tokenizer) -> tuple[list[list[int]], int, dict]:
    """Token ids of the first held-out documents up to ~budget_tokens, their UTF-8 bytes, and skip counts."""
    docs, n_bytes, n_tokens, skipped = [], 0, 0, {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if n_tokens >= budget_tokens:
                break
            try:
                text = json.loads(line)["text"]
                if not isinstance(text, str) or not text:
                    raise ValueError("empty or non-string text")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                reason = type(e).__name__
                skipped[reason] = skipped.get(reason, 0) + 1
                log.warning("%s line %d: skipped (%s: %s)", path, i, reason, e)
                continue
            ids = tokenizer.encode(text, add_special_tokens=False)
            room = budget_tokens - n_tokens
            if len(ids) > room:  # cut the text, not the tokens, so the scored bytes stay exact
                text = text[: max(1, int(len(text) * room / len(ids)))]
                ids = tokenizer.encode(text, add_special_tokens=False)
            docs.append(ids)
            n_tokens += len(ids)
            n_bytes += len(text.encode("utf-8"))
    return docs, n_bytes, skipped


@torch.no_grad()
def score_stream(model, docs: list[list[int]], eot_id: int, seq_len: int, batch_size: int, desc: str) -> tuple[float, int]:
    """Sum of next-token losses (nats) over every document token, and how many tokens were scored.

    The stream is EOT d1 EOT d2 ...; windows of seq_len inputs step by seq_len, so every token after the first
    is predicted exactly once (with up to seq_len tokens of context).
    """
    stream, scored = [], []
    for ids in docs:
        stream.append(eot_id)
        scored.append(False)
        stream.extend(ids)
        scored.extend([True] * len(ids))
    x = torch.tensor(stream, dtype=torch.long)
    mask = torch.tensor(scored, dtype=torch.bool)
    device = next(model.parameters()).device
    starts = range(0, len(stream) - 1, seq_len)
    full = [s for s in starts if len(stream) - 1 - s >= seq_len]
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[s] for s in starts if len(stream) - 1 - s < seq_len]  # the shorter last window on its own
    total, count = 0.0, 0
    for group in tqdm(batches, desc=desc, leave=False):
        n = min(seq_len, len(stream) - 1 - group[0])
        inp = torch.stack([x[s:s + n] for s in group]).to(device)  # (B, T)
        tgt = torch.stack([x[s + 1:s + n + 1] for s in group]).to(device)  # (B, T)
        keep = torch.stack([mask[s + 1:s + n + 1] for s in group]).to(device)  # (B, T)
        logits = model(inp).logits.float()  # (B, T, V)
        nll = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.reshape(-1), reduction="none")  # (B*T,)
        total += float(nll[keep.reshape(-1)].sum())
        count += int(keep.sum())
    return total, count


def evaluate_bpb(model, tokenizer, val_dir: Path | None, sources: list[str], budget_tokens: int, seq_len: int,
                 batch_size: int) -> tuple[dict, dict]:
    """({"val_loss": {source: nats/token}, "bpb": {source: bits/byte}}, {source: details or skip reason})."""
    losses, bpbs, info = {}, {}, {}
    for source in sources:
        path = val_dir / f"{source}.jsonl.gz" if val_dir is not None else None
        if path is None or not path.exists():
            info[source] = {"skipped": f"no held-out documents at {path}"}
            log.warning("bits per byte for %s skipped: no held-out documents at %s", source, path)
            continue
        docs, n_bytes, skipped = read_val_docs(path, budget_tokens, tokenizer)
        if not docs:
            info[source] = {"skipped": f"no usable documents in {path}", "bad_docs": skipped}
            log.warning("bits per byte for %s skipped: no usable documents in %s", source, path)
            continue
        nats, n_tok = score_stream(model, docs, tokenizer.eos_token_id, seq_len, batch_size, f"bpb {source}")
        losses[source] = nats / n_tok
        bpbs[source] = nats / (math.log(2) * n_bytes)
        info[source] = {"docs": len(docs), "tokens": n_tok, "bytes": n_bytes, "bad_docs": skipped}
        log.info("%s held-out: %d docs, %d tokens, %d bytes: loss %.4f nats/token, %.4f bits/byte",
                 source, len(docs), n_tok, n_bytes, losses[source], bpbs[source])
    return {"val_loss": losses, "bpb": bpbs}, info


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Greedy completions (deterministic), one record per prompt."""
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        room = model.config.max_position_embeddings - ids.shape[1]
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max(1, min(max_new_tokens, room)),
                             do_sample=False, pad_token_id=tokenizer.eos_token_id)
        completion = tokenizer.decode(new[0, ids.shape[1]:], skip_special_tokens=False)
        out.append({"prompt": prompt, "completion": completion})
        log.info("generation: %r → %r", prompt, completion[:120])
    return out
