"""mix: natural language : code by tokens (TinyLlama 7:3), with a deterministic validation hold-out."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section


class MixConfig(Section):
    code_fraction: float = Field(0.306416, gt=0, lt=1)
    """Share of code tokens in the training shards (TinyLlama: 0.306416 code / 0.693584 natural language)."""
    code_source: str = "code"
    """Value of metadata.source that counts as code; every other weighted source is natural language."""
    text_weights: dict[str, float] = {"web": 0.5, "books": 0.5}
    """Relative weights of the natural-language sources inside the natural-language share."""
    max_repeats: float = Field(4.0, ge=1)
    """A source is repeated (whole epochs plus a seeded subset) at most this many times to reach its share."""
    total_tokens: int | None = Field(None, gt=0)
    """Target training tokens; null: the largest mix in which no source is repeated more than max_repeats."""
    tolerance: float = Field(0.01, gt=0, lt=1)
    """Allowed relative deviation of the realised code share from code_fraction (a warning beyond it)."""
    val_fraction: float = Field(0.01, ge=0, lt=1)
    """Fraction of documents held out for validation, chosen by a hash of the document id (never repeated)."""
    min_val_docs: int = Field(1, ge=0)
    """Per source, at least this many validation documents (the lowest id hashes), so that every source
    gets a bits-per-byte figure even when val_fraction of its documents rounds to none (books)."""
    docs_per_file: int = Field(20_000, gt=0)
    """Documents per output JSONL shard."""
    threads: int = Field(2, ge=1)
    """Threads for tiktoken batch encoding (token counts per document)."""
    seed: int = 0
    """Seed of the subset choice and of the document order."""

    @model_validator(mode="after")
    def _weights(self):
        if not self.text_weights or any(w <= 0 for w in self.text_weights.values()):
            raise ValueError("text_weights must be non-empty with positive weights")
        if self.code_source in self.text_weights:
            raise ValueError(f"text_weights must not name the code source {self.code_source!r}")
        return self

    def source_shares(self) -> dict[str, float]:
        """Target share of training tokens per source (sums to 1)."""
        total = sum(self.text_weights.values())
        shares = {s: (1 - self.code_fraction) * w / total for s, w in self.text_weights.items()}
        return {**shares, self.code_source: self.code_fraction}
