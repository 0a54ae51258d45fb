"""dedup stage: exact and MinHash-LSH near-duplicate removal across all sources (see docs/dedup.md)."""
from .stage import run_dedup

__all__ = ["run_dedup"]
