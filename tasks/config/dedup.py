"""dedup: exact and MinHash-LSH near-duplicate removal across all sources."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section, available_cpus, resolve_auto
from .executor import ExecutorConfig

SOURCES = ("web", "books", "code")


class RedisStorage(Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    basename: str = "tinyfoundry-lsh"
    """Key prefix in Redis; each run adds a random suffix and deletes its keys when done."""


class DedupConfig(Section):
    engine: Literal["native", "datatrove"] = "native"
    """`native`: signatures in worker processes, one in-memory (or Redis) LSH index, fastest on one machine.
    `datatrove`: datatrove's MinHash stages (signatures → buckets → clusters → filter) on `executor`, no
    process holding every document: for corpora past one machine (docs/dedup.md, "Which engine")."""
    executor: ExecutorConfig = ExecutorConfig()
    """Where `engine: datatrove` runs its stages (local processes, Slurm, Ray); its signature and filter
    stages use `tasks` tasks (the inputs' shards are split between them), the bucket stage `bands` tasks."""
    shingle_words: int = Field(5, ge=1)
    """Word n-gram size of the shingles (FineWeb: 5). A document shorter than this is one shingle."""
    num_perm: int = Field(112, ge=8)
    """MinHash permutations (FineWeb: 112)."""
    bands: int = Field(14, ge=2)
    """LSH bands (FineWeb: 14). With `rows` this sets the S-curve: candidates above ≈ (1/bands)^(1/rows)."""
    rows: int = Field(8, ge=1)
    """MinHash values per band (FineWeb: 8)."""
    band_layouts: int = Field(2, ge=1, le=8)
    """How many ways the same signature is cut into `bands` × `rows` (1: FineWeb's banding alone).
    Layout 1 takes the values in order; each further layout re-bands a fixed shuffle of them, so the
    candidates are a superset of FineWeb's: at Jaccard 0.85 a pair is missed with p ≈ 0.0007 instead
    of 0.012, for 16 more index bytes per band per document. The verification turns down the extra
    low-similarity candidates."""
    verify_threshold: float = Field(0.7, gt=0, le=1)
    """An LSH candidate is a near duplicate only if its Jaccard similarity (see `verify`) reaches this
    (removes the banding's false positives; FineWeb does not verify)."""
    verify: Literal["estimate", "exact"] = "estimate"
    """How candidates are verified: Jaccard estimated from the two signatures (no extra memory), or the
    exact Jaccard of the two shingle-hash sets (kept in memory: ~4 bytes per distinct shingle)."""
    seed: int = 1
    """Seed of the MinHash permutations (datasketch `MinHash(seed=...)`)."""
    keep_priority: list[str] = ["books", "code", "web"]
    """Which member of a duplicate cluster is kept: earlier sources win, then the longer document,
    then the smaller id."""
    storage: Literal["memory", "redis"] = "memory"
    """LSH index storage: compact in-process arrays, or datasketch's Redis storage (shared by machines)."""
    redis: RedisStorage = RedisStorage()
    processes: int = Field(2, ge=1)
    """Worker processes computing signatures (1: in the stage's own process), or `auto`: one per available
    core. Outputs do not depend on it."""
    batch_docs: int = Field(256, ge=1)
    """Documents per signature task sent to a worker."""
    shard_docs: int = Field(50_000, ge=1)
    """Documents per output shard."""

    @field_validator("processes", mode="before")
    @classmethod
    def _auto_processes(cls, v):
        return resolve_auto(v, available_cpus())

    @field_validator("keep_priority")
    @classmethod
    def _known_sources(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(SOURCES))
        if unknown:
            raise ValueError(f"names unknown sources {unknown}; sources are {list(SOURCES)}")
        if len(set(v)) != len(v):
            raise ValueError("lists a source twice")
        return v

    @model_validator(mode="after")
    def _bands_rows(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows ({self.bands}*{self.rows}) must not exceed num_perm ({self.num_perm})")
        return self

    @model_validator(mode="after")
    def _datatrove_engine(self):
        if self.engine != "datatrove":
            return self
        native_only = {"band_layouts": (self.band_layouts, 1), "storage": (self.storage, "memory"),
                       "verify": (self.verify, "estimate"), "num_perm": (self.num_perm, self.bands * self.rows)}
        for key, (value, needed) in native_only.items():
            if value != needed:
                raise ValueError(f"{key} must be {needed!r} with engine 'datatrove', not {value!r} (datatrove computes "
                                 "bands*rows hash values, bands them once and keeps no shingle sets or index)")
        return self

    def index_shape(self) -> tuple[int, tuple[int, int]]:
        """(values, (bands, rows)) of the `MinHashLSH` holding every layout's bands side by side."""
        return self.band_layouts * self.bands * self.rows, (self.band_layouts * self.bands, self.rows)

    def lsh_threshold(self) -> float:
        """Jaccard similarity where a pair has a 50% chance of sharing a band: ≈ (1/bands)^(1/rows)."""
        return (1 / self.bands) ** (1 / self.rows)
