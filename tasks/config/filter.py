"""filter: datatrove heuristics per source plus a fastText quality classifier."""
from __future__ import annotations

from pydantic import Field

from .base import Section
from .executor import ExecutorConfig


class ClassifierConfig(Section):
    model_path: str | None = None
    """Use this existing fastText model instead of training one."""
    positive_sources: list[str] = ["books", "web:docs"]
    """High-quality examples: a source name, or `web:docs` for documentation-site pages."""
    negative_sources: list[str] = ["web:rejected", "web:random"]
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    epoch: int = Field(5, ge=1)
    lr: float = Field(0.5, gt=0)
    word_ngrams: int = Field(2, ge=1)
    dim: int = Field(64, ge=2)


class SourceFilterConfig(Section):
    heuristics: list[str] = ["gopher_quality", "gopher_repetition", "c4", "fineweb_quality"]
    min_quality_score: float = Field(0.0, ge=0, le=1)
    """Documents whose classifier score is below this are dropped (0 keeps all)."""


class FilterConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    web: SourceFilterConfig = SourceFilterConfig()
    books: SourceFilterConfig = SourceFilterConfig(heuristics=["gopher_repetition"])
    code: SourceFilterConfig = SourceFilterConfig(heuristics=["code"])
