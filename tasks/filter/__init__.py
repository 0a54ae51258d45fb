"""Quality filter stage: datatrove heuristics per source + a fastText quality classifier (see docs/filter.md)."""
from .stage import run_filter

__all__ = ["run_filter"]
