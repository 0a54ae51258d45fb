"""shard: mixed documents → fixed-size binary token shards with a manifest."""
from __future__ import annotations

from pydantic import Field

from .base import Section


class ShardConfig(Section):
    shard_tokens: int = Field(2**22, gt=0)
    """Tokens per shard file (the last shard of a split holds the remainder)."""
    threads: int = Field(2, ge=1)
    """Threads encoding documents with tiktoken (its Rust core releases the GIL)."""
    batch_docs: int = Field(512, gt=0)
    """Documents handed to the encoder threads at once."""
