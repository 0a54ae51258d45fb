"""dedup: exact and MinHash-LSH near-duplicate removal across all sources."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class RedisStorage(Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    basename: str = "tinyfoundry-lsh"


class DedupConfig(Section):
    shingle_words: int = Field(5, ge=1)
    """Word n-gram size of the shingles (FineWeb: 5)."""
    num_perm: int = Field(112, ge=8)
    bands: int = Field(14, ge=1)
    rows: int = Field(8, ge=1)
    seed: int = 1
    keep_priority: list[str] = ["books", "code", "web"]
    """Which member of a duplicate cluster is kept: earlier sources win, then the longer document."""
    storage: Literal["memory", "redis"] = "memory"
    redis: RedisStorage = RedisStorage()
    processes: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _bands_rows(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows ({self.bands}*{self.rows}) must not exceed num_perm ({self.num_perm})")
        return self
