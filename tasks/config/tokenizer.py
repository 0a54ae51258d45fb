"""tokenizer: BPE trained with rustbpe on a sample of the corpus, used through tiktoken."""
from __future__ import annotations

import regex
from pydantic import Field, field_validator, model_validator

from .base import Section

GPT4_SPLIT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
"""GPT-4's (cl100k) pre-tokenizer split regex, as nanochat uses it."""


class TokenizerConfig(Section):
    vocab_size: int = Field(8192, ge=260, le=1_000_000)
    """Total vocabulary: 256 byte tokens + BPE merges + the special tokens (the model's embedding rows)."""
    split_pattern: str = GPT4_SPLIT
    """Pre-tokenizer regex (tiktoken/`regex` syntax); BPE merges never cross its matches."""
    special_tokens: list[str] = ["<|endoftext|>"]
    """Special tokens, given the ids right after the BPE ranks in this order; must contain <|endoftext|>."""
    sample_bytes: int = Field(20_000_000, gt=0)
    """UTF-8 bytes of text the tokenizer is trained on, drawn from the corpus at `sample_weights`."""
    sample_weights: dict[str, float] = {"web": 0.34679, "books": 0.34679, "code": 0.306416}
    """Share of the training sample per source (normalised); by default the mix's 7:3 text:code proportions."""
    eval_bytes: int = Field(1_000_000, ge=0)
    """Per source, bytes of documents outside the sample on which bytes/token is measured (sample if none)."""
    hf_check_bytes: int = Field(300_000, ge=0)
    """Bytes of text re-encoded with the exported HF tokenizer.json to check it gives the same ids (0: skip)."""
    threads: int = Field(2, ge=1)
    """Threads for tiktoken batch encoding when measuring bytes/token."""
    seed: int = 0
    """Seed of the document sample."""

    @field_validator("split_pattern")
    @classmethod
    def _pattern_compiles(cls, v: str) -> str:
        try:
            regex.compile(v)
        except regex.error as e:
            raise ValueError(f"is not a valid regex: {e}") from None
        return v

    @field_validator("special_tokens")
    @classmethod
    def _specials(cls, v: list[str]) -> list[str]:
        if "<|endoftext|>" not in v:
            raise ValueError("must include <|endoftext|> (documents are joined by it)")
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a token")
        return v

    @field_validator("sample_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("must map sources to non-negative weights with a positive sum")
        return v

    @model_validator(mode="after")
    def _room_for_merges(self):
        if self.vocab_size - len(self.special_tokens) < 256:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room for the 256 byte tokens "
                             f"and {len(self.special_tokens)} special tokens")
        return self

    def bpe_vocab_size(self) -> int:
        """Byte tokens + merges that rustbpe learns (vocab_size minus the special tokens)."""
        return self.vocab_size - len(self.special_tokens)
