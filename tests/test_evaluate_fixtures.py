"""Builders shared by the evaluate/export/registry tests: a throwaway tokenizer trained with rustbpe on real
book text and a tiny random Llama checkpoint in the training stage's data/model layout (no tests here)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

EOT = "<|endoftext|>"


def book_text(shared_data: Path, max_chars: int = 400_000) -> str:
    parts, n = [], 0
    for path in sorted((shared_data / "books").glob("*.txt.gz"))[:3]:
        text = gzip.open(path, "rb").read().decode("utf-8", errors="replace").replace("\r\n", "\n")
        parts.append(text[: max_chars // 3])
        n += len(parts[-1])
    return "\n".join(parts)


def train_tiktoken(text: str, vocab_size: int = 512):
    """rustbpe → tiktoken.Encoding with one special token (nanochat's recipe)."""
    import rustbpe
    import tiktoken

    from tasks.config.tokenizer import GPT4_SPLIT

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(text.split("\n\n")), vocab_size - 1, pattern=GPT4_SPLIT)
    ranks = {bytes(k): v for k, v in bpe.get_mergeable_ranks()}
    return tiktoken.Encoding(name="test", pat_str=bpe.get_pattern(), mergeable_ranks=ranks,
                             special_tokens={EOT: len(ranks)})


def write_tokenizer_json(enc, folder: Path) -> None:
    from tasks.evaluate.export import tiktoken_to_hf

    tiktoken_to_hf(enc).save(str(folder / "tokenizer.json"))


def make_model_dir(folder: Path, enc, *, seed: int = 0, tie: bool = False, n_layer: int = 2, d_model: int = 64,
                   n_head: int = 4, n_kv_head: int = 2, max_seq_len: int = 256, perturb: float = 0.0) -> Path:
    """data/model layout: model.safetensors (fp32 torchtitan keys), config.json, meta.json, tokenizer.json."""
    import torch
    from safetensors.torch import save_file

    from models.llama import Llama, ModelConfig

    folder.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig(vocab_size=enc.n_vocab, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                      d_model=d_model, ffn_hidden=4 * d_model // 2, max_seq_len=max_seq_len, tie_embeddings=tie,
                      rope_theta=10000.0, norm_eps=1e-5)
    torch.manual_seed(seed)
    model = Llama(cfg)
    with torch.no_grad():  # non-trivial norms so a swapped norm key would show in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif perturb:
                p.add_(perturb * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**cfg.to_dict(), "preset": "test"}, indent=2))
    (folder / "meta.json").write_text(json.dumps({"step": 0, "note": "random test model"}))
    write_tokenizer_json(enc, folder)
    return folder
