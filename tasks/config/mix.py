"""mix: natural language : code by tokens (TinyLlama 7:3)."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section


class MixConfig(Section):
    code_fraction: float = Field(0.306416, gt=0, lt=1)
    """Share of code tokens in the training mix (TinyLlama: 0.306416)."""
    text_weights: dict[str, float] = {"web": 0.5, "books": 0.5}
    """Relative weights of the natural-language sources."""
    max_repeats: float = Field(4.0, ge=1)
    """A source is repeated at most this many times to reach its share."""
    total_tokens: int | None = None
    """Target size of the mix; null uses as much data as the ratio and max_repeats allow."""
    seed: int = 0

    @model_validator(mode="after")
    def _weights(self):
        if not self.text_weights or any(w <= 0 for w in self.text_weights.values()):
            raise ValueError("text_weights must be non-empty with positive weights")
        return self
