"""tokenizer: BPE trained with rustbpe, used through tiktoken."""
from __future__ import annotations

from pydantic import Field

from .base import Section

GPT4_SPLIT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


class TokenizerConfig(Section):
    vocab_size: int = Field(8192, ge=260, le=1_000_000)
    split_pattern: str = GPT4_SPLIT
    special_tokens: list[str] = ["<|endoftext|>"]
    sample_bytes: int = Field(20_000_000, gt=0)
    """Training sample size, drawn from the corpus at the mix weights."""
    seed: int = 0
