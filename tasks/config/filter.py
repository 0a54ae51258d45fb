"""filter: datatrove heuristics per source plus a fastText quality classifier (DCLM-style: reference vs random web)."""
from __future__ import annotations

import inspect
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import FieldProblem, Section
from .executor import ExecutorConfig
from .languages import unknown_languages

# Heuristic name -> "module:Class" of the filter it builds; params are that class's keyword arguments.
# Import paths stay strings so loading params.yaml never imports datatrove/spaCy.
HEURISTICS: dict[str, str] = {
    "gopher_quality": "datatrove.pipeline.filters.gopher_quality_filter:GopherQualityFilter",
    "gopher_repetition": "datatrove.pipeline.filters.gopher_repetition_filter:GopherRepetitionFilter",
    "c4": "datatrove.pipeline.filters.c4_filters:C4QualityFilter",
    "fineweb_quality": "datatrove.pipeline.filters.fineweb_quality_filter:FineWebQualityFilter",
    "language": "tasks.filter.heuristics:OfflineLanguageFilter",
    "code": "tasks.filter.heuristics:CodeQualityFilter",
}
PROSE_HEURISTICS = {"gopher_quality", "gopher_repetition", "c4", "fineweb_quality"}
SOURCES = ("web", "books", "code")


def heuristic_class(name: str):
    import importlib

    module, cls = HEURISTICS[name].split(":")
    return getattr(importlib.import_module(module), cls)


class ClassifierConfig(Section):
    model_path: str | None = None
    """An existing fastText model file to score with instead of training one (its labels must include
    `__label__<positive_label>`); null trains one on the reference corpus vs the negative source."""
    positive_label: str = "hq"
    """The model's label for high quality (`__label__<this>`); the score is its probability. A trained
    model uses `hq`/`lq`; DCLM's released model uses `hq`/`cc`."""
    reference_text_key: str = Field("text", min_length=1)
    """Positives are the documents of the reference corpus (`fetch.reference`): `.txt`/`.txt.gz` files are one
    document each (a Project Gutenberg header and footer are cut), `.jsonl`/`.jsonl.gz` lines are one
    document each with the text under this key."""
    negative_source: Literal["web", "books", "code"] = "web"
    """Negatives are a seeded random sample of this source's documents in the filter input."""
    negative_pool: Literal["all", "kept"] = "all"
    """Sample negatives from every document of the source (`all`: as crawled, heuristic rejects included, the
    DCLM recipe's random crawl) or only from those that passed the heuristics (`kept`)."""
    negative_fraction: float = Field(1.0, gt=0, le=1)
    """Share of the pool drawn (seeded) as negatives."""
    folds: int = Field(2, ge=1, le=10)
    """Cross-fitting: the negatives are split into this many folds by id, and fold k's model is trained without
    fold k's documents and scores them, so no page is scored by a model that trained on it (a memorised
    training negative scores lower than an unseen page, which would bias the cuts). 1: one model for all."""
    chunk_words: int = Field(200, ge=10)
    """Documents are cut into chunks of this many words to train and score (books are far longer than a
    fastText example should be); a document's score is the mean over its chunks."""
    max_chunks_per_doc: int = Field(8, ge=1)
    """At most this many chunks (evenly spaced) per scored or negative document."""
    max_chunks_per_reference_doc: int = Field(64, ge=1)
    """At most this many chunks (evenly spaced) per reference document for training: a reference corpus of a
    few long books still gives a few thousand examples."""
    max_examples_per_class: int = Field(20000, ge=10)
    """Training chunks per class are capped (seeded sample) at this number."""
    balance: bool = True
    """Downsample the larger class's training chunks to the size of the smaller one."""
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of labelled documents (split by a hash of id and seed: deterministic) held out for validation."""
    min_heldout_per_class: int = Field(5, ge=1)
    """Validation needs at least this many held-out documents of each class; fewer: not validated."""
    min_f1: float = Field(0.8, ge=0, le=1)
    """The classifier drops documents only if its held-out F1 (reference = positive, score >= 0.5) reaches this."""
    require_validated: bool = False
    """true: a classifier that cannot be validated, or misses min_f1, stops the stage with an error; false: it
    drops nothing (scores are still written) and the stage warns."""
    max_drop_fraction: float = Field(0.5, ge=0, le=1)
    """The stage fails if the classifier would drop more than this share of a source's documents that passed
    the heuristics (a guard against silent loss; raise it to allow DCLM-style aggressive cuts)."""
    seed: int = 0
    """Seeds the split, the samples and fastText (trained with thread=1, the only deterministic setting)."""
    epoch: int = Field(25, ge=1)
    """fastText epochs (the labelled set is small: a few hundred chunks per class on the demo data)."""
    lr: float = Field(0.3, gt=0)
    """fastText learning rate; halved and retried (logged) if training diverges to NaN."""
    word_ngrams: int = Field(2, ge=1)
    """fastText wordNgrams."""
    dim: int = Field(32, ge=2)
    min_count: int = Field(2, ge=1)
    """fastText minCount: words seen fewer times are ignored."""
    bucket: int = Field(200000, ge=1000)
    """fastText hash buckets for n-grams (model size grows with it)."""

    @field_validator("positive_label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("a fastText label is one word without spaces")
        return v


class SourceFilterConfig(Section):
    heuristics: dict[str, dict] = {name: {} for name in ("gopher_quality", "gopher_repetition", "c4",
                                                         "fineweb_quality")}
    """Heuristic filters run in order, each `name: {keyword arguments of its datatrove filter}`
    (names: gopher_quality, gopher_repetition, c4, fineweb_quality, language, code)."""
    heuristics_max_chars: int = Field(0, ge=0)
    """Heuristics judge a longer document by its first this-many characters (0: the whole text). The
    Gopher repetition n-gram counts are pure Python: a whole book takes seconds. Text edits a filter makes
    (C4 drops lines) apply only to documents within the limit."""
    word_tokenizer: Literal["regex", "spacy"] = "regex"
    """Word splitting for the prose heuristics: `regex` (fast, whitespace/punctuation words, as Gopher's
    paper counts them) or `spacy` (datatrove's default: a blank spaCy English pipeline, ~7x slower here)."""
    min_quality_score: float = Field(0.0, ge=0, le=1)
    """Absolute cut: documents whose classifier score is below this are dropped (0 keeps all)."""
    keep_top_fraction: float | None = Field(None, gt=0, le=1)
    """Relative cut: keep this top share of the source's documents (those that passed the heuristics) by
    score; with min_quality_score too, the higher of the two cuts applies. Null: no relative cut."""

    @field_validator("heuristics")
    @classmethod
    def _known(cls, v: dict[str, dict]) -> dict[str, dict]:
        for name, kwargs in v.items():
            if name not in HEURISTICS:
                raise ValueError(f"unknown heuristic {name!r}; known: {sorted(HEURISTICS)}")
            if not isinstance(kwargs, dict):
                raise ValueError(f"heuristic {name!r} needs a mapping of keyword arguments, got {kwargs!r}")
            if "exclusion_writer" in kwargs:
                raise ValueError(f"heuristic {name!r}: exclusion_writer is set by the stage, not in params")
            codes = kwargs.get("languages") if name == "language" else None
            if problem := unknown_languages([codes] if isinstance(codes, str) else codes or []):
                raise FieldProblem("language.languages", problem)
        return v


class FilterConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    web: SourceFilterConfig = SourceFilterConfig(heuristics={
        "gopher_quality": {}, "gopher_repetition": {"dup_line_frac": 0.4},
        "c4": {"filter_no_terminal_punct": False, "filter_curly_bracket": False},
        "fineweb_quality": {"line_punct_thr": 0.05, "char_duplicates_ratio": 0.1}}, keep_top_fraction=0.9)
    books: SourceFilterConfig = SourceFilterConfig(heuristics={
        "language": {}, "gopher_repetition": {"dup_para_frac": None, "dup_line_frac": None}},
        heuristics_max_chars=100000)
    code: SourceFilterConfig = SourceFilterConfig(heuristics={"code": {}})

    @model_validator(mode="after")
    def _cuts_within_guard(self):
        # a relative cut that certainly trips the drop guard is a contradiction in params: say so before any work
        for source in SOURCES:
            keep = getattr(self, source).keep_top_fraction
            if keep is not None and 1 - keep > self.classifier.max_drop_fraction + 1e-9:
                raise ValueError(f"{source}.keep_top_fraction {keep} drops {1 - keep:.0%} of the {source} documents "
                                 f"that pass the heuristics, more than classifier.max_drop_fraction "
                                 f"{self.classifier.max_drop_fraction} allows: raise max_drop_fraction too")
        return self

    @model_validator(mode="after")
    def _prose_not_on_code(self):
        prose = PROSE_HEURISTICS & set(self.code.heuristics)
        if prose:
            raise ValueError(f"code.heuristics {sorted(prose)} are prose filters and would drop most code; "
                             "use the `code` heuristic")
        return self

    def heuristic_errors(self) -> list[str]:
        """Each heuristic's keyword arguments checked against its filter class's signature: unknown names and
        values of the wrong type (imports datatrove; `python -m tasks validate` and stage starts run it)."""
        from typing import get_type_hints

        from pydantic import TypeAdapter, ValidationError

        errors = []
        for source in SOURCES:
            for name, kwargs in getattr(self, source).heuristics.items():
                cls = heuristic_class(name)
                params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "exclusion_writer")]
                key = f"filter.{source}.heuristics.{name}"
                unknown = sorted(set(kwargs) - set(params))
                if unknown:
                    errors.append(f"{key}: unknown argument(s) {unknown}; {cls.__name__} accepts {sorted(params)}")
                hints = get_type_hints(cls.__init__)
                for arg, value in kwargs.items():
                    if arg in hints and arg in params:
                        try:
                            TypeAdapter(hints[arg]).validate_python(value)
                        except ValidationError:
                            errors.append(f"{key}.{arg} must be {_type_name(hints[arg])}, got {value!r}")
        return errors

    def check_heuristic_kwargs(self) -> None:
        if errors := self.heuristic_errors():
            raise ValueError("; ".join(errors))


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
