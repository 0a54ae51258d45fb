"""shard: tokenized documents → fixed-size binary token shards."""
from __future__ import annotations

from pydantic import Field

from .base import Section


class ShardConfig(Section):
    shard_tokens: int = Field(2**22, gt=0)
    """Tokens per shard file."""
    val_fraction: float = Field(0.01, gt=0, lt=1)
    """Fraction of documents (by id hash) held out for validation."""
    processes: int = Field(2, ge=1)
    seed: int = 0
