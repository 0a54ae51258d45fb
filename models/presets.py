"""Named model shapes. Each factory takes the vocabulary size (set from the tokenizer at run time).

| preset          | layers | d    | heads (kv) | SwiGLU | ctx  | tied | params (at vocab)      |
|-----------------|--------|------|------------|--------|------|------|------------------------|
| 10m             | 8      | 256  | 8 (4)      | 768    | 512  | no   | 10.49M (8192)          |
| 50m             | 10     | 512  | 16 (16)    | 1536   | 512  | yes  | 59.82M (50257), STLM baseline shape |
| 125m            | 16     | 768  | 12 (4)     | 2048   | 2048 | yes  | 125.26M (32000)        |
| tinyllama-1.1b  | 22     | 2048 | 32 (4)     | 5632   | 2048 | no   | 1,100,048,384 (32000)  |
| gpt2-124m       | 12     | 768  | 12 (12)    | 2048   | 1024 | yes  | 123.55M (50257); SwiGLU 2048 = GPT-2's 2·768·3072 MLP weights |
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .llama import ModelConfig


def _10m(vocab_size: int = 8192) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, n_layer=8, n_head=8, n_kv_head=4, d_model=256, ffn_hidden=768,
                       max_seq_len=512)


def _50m(vocab_size: int = 50257) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, n_layer=10, n_head=16, n_kv_head=16, d_model=512, ffn_hidden=1536,
                       max_seq_len=512, tie_embeddings=True)


def _125m(vocab_size: int = 32000) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, n_layer=16, n_head=12, n_kv_head=4, d_model=768, ffn_hidden=2048,
                       max_seq_len=2048, tie_embeddings=True)


def _tinyllama(vocab_size: int = 32000) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, n_layer=22, n_head=32, n_kv_head=4, d_model=2048, ffn_hidden=5632,
                       max_seq_len=2048, rope_theta=10000.0, norm_eps=1e-5)


def _gpt2_124m(vocab_size: int = 50257) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, n_layer=12, n_head=12, n_kv_head=12, d_model=768, ffn_hidden=2048,
                       max_seq_len=1024, tie_embeddings=True)


PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "10m": _10m,
    "50m": _50m,
    "125m": _125m,
    "tinyllama-1.1b": _tinyllama,
    "gpt2-124m": _gpt2_124m,
}


def build_config(preset: str, vocab_size: int | None = None, **overrides) -> ModelConfig:
    """The preset's ModelConfig with `vocab_size` and any field overrides applied (validated again)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]() if vocab_size is None else PRESETS[preset](vocab_size)
    unknown = set(overrides) - set(cfg.to_dict())
    if unknown:
        raise ValueError(f"model overrides name unknown ModelConfig fields: {', '.join(sorted(unknown))}")
    return replace(cfg, **overrides)
