"""ingest: raw files of each source → clean documents (datatrove JSONL), rejects with reasons."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section, inherit_default
from .executor import ExecutorConfig
from .languages import unknown_languages


class WebIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    languages: list[str] = ["en"]
    """Languages kept (ISO 639-1 codes as lid.176 writes them), identified offline with fastText lid.176; [] keeps all."""
    language_threshold: float = Field(0.65, ge=0, le=1)
    """Pages whose top language score is below this are dropped (`language_score`)."""
    min_chars: int = Field(200, ge=0)
    """Documents with less extracted main text are dropped (`too_short`)."""
    url_blocklist: list[str] = []
    """Domains (and their subdomains) whose pages are dropped (`url_blocked`), e.g. `example.com`."""
    extractor: Literal["resiliparse+trafilatura", "resiliparse", "trafilatura"] = "resiliparse+trafilatura"
    """HTML → main text (tasks/ingest/extract.py; benchmarks/extraction.py measures each): `resiliparse` (Resiliparse
    main content + boilerplate skip rules, ~7x less CPU than trafilatura), `trafilatura` (trafilatura 1.11, what
    datatrove uses), or `resiliparse+trafilatura`: resiliparse, and trafilatura for the pages where resiliparse's
    main text is under `fallback_below` of the page's visible words (its heuristics missed the article)."""
    fallback_below: float = Field(0.1, ge=0, le=1)
    """`resiliparse+trafilatura` only: share of the page's visible words below which trafilatura re-extracts it."""
    extract_timeout_s: float = Field(30.0, gt=0)
    """Per-page extraction wall-clock limit (datatrove's extractor sandbox); slower pages are `extract_timeout`
    rejects. Generous on purpose: the largest real page (python docs genindex-all, 1.7 MB) needs ~5 s of trafilatura
    CPU, and a page that times out only on a loaded machine would make outputs differ between runs."""
    favour_precision: bool = True
    """trafilatura `favor_precision` (where trafilatura runs): less boilerplate, sometimes less text."""
    no_fallback: bool = False
    """trafilatura `no_fallback` (where trafilatura runs): skip its readability/jusText fallbacks; measured 27% less
    CPU per page on the docs WARCs for 4% less extracted text."""
    shard_records: bool = True
    """Tasks split the WARC records (`i % tasks`) instead of whole files: every task parses every file, but the
    trafilatura work is balanced (with file sharding the python-docs WARC alone kept one of 2 tasks busy 4x longer)."""
    max_record_bytes: int = Field(10_000_000, gt=0)
    """HTML payloads larger than this are dropped (`too_large`) before extraction."""

    @field_validator("languages")
    @classmethod
    def _lid_codes(cls, v: list[str]) -> list[str]:
        if problem := unknown_languages(v):
            raise ValueError(problem)
        return v

    @field_validator("url_blocklist")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not d or "/" in d or " " in d]
        if bad:
            raise ValueError(f"url_blocklist holds domains like `example.com`, not URLs or blanks: {bad}")
        return v


class BooksIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    min_chars: int = Field(1000, ge=0)
    """Books (or parts) with less text after stripping the Gutenberg header/footer are dropped (`too_short`)."""
    split_chars: int = Field(0, ge=0)
    """Split books longer than this many characters into chapter-sized documents; 0 keeps whole books."""
    max_book_bytes: int = Field(64_000_000, gt=0)
    """Books larger than this, compressed on disk or once decompressed, are dropped (`too_large`) without being
    decompressed further: a gzip bomb cannot exhaust memory. The largest Gutenberg texts (dictionaries) are a few
    tens of MB."""

    @model_validator(mode="after")
    def _split(self):
        if 0 < self.split_chars < self.min_chars:
            raise ValueError(f"split_chars ({self.split_chars}) must be 0 or at least min_chars ({self.min_chars})")
        return self


class CodeIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    languages: dict[str, list[str]] = {
        "python": [".py"], "c": [".c", ".h"], "c++": [".cc", ".cpp", ".hpp", ".cxx", ".hh"],
        "javascript": [".js", ".mjs"], "shell": [".sh", ".bash"],
    }
    """Language → file extensions that are ingested; other files are skipped (`unsupported_extension`)."""
    skip_dirs: list[str] = [".git", "node_modules", "build", "dist", "__pycache__", "site-packages", "vendor"]
    """Directory names whose whole subtree is skipped (`skipped_dir`): VCS, vendored and build trees."""
    max_file_bytes: int = Field(1_000_000, gt=0)
    """Files larger than this are dropped (`too_large`) without being read."""
    max_line_length: int = Field(1000, gt=0)
    """StarCoder: a line longer than this marks minified/generated data (`long_line`)."""
    max_mean_line_length: float = Field(100.0, gt=0)
    """StarCoder: mean line length above this (`mean_line_length`)."""
    min_alnum_fraction: float = Field(0.25, ge=0, le=1)
    """StarCoder: share of alphanumeric characters below this (`alnum_fraction`)."""
    drop_autogenerated: bool = True
    """Drop files whose first lines say they are generated (`autogenerated`: "auto-generated", "do not edit", ...)."""
    layout: str = "auto"
    """`repos`: each top-level folder of the input is one repository; `single`: the input folder is one
    repository; `auto`: `single` when the input has files or a `.git` at its top level, else `repos`."""

    @field_validator("languages")
    @classmethod
    def _extensions(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for lang, exts in v.items():
            for ext in exts:
                if not ext.startswith("."):
                    raise ValueError(f"extension {ext!r} of {lang} must start with a dot")
                if ext.lower() in seen:
                    raise ValueError(f"extension {ext} is listed for both {seen[ext.lower()]} and {lang}")
                seen[ext.lower()] = lang
        return v

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str) -> str:
        if v not in ("auto", "repos", "single"):
            raise ValueError("layout must be one of auto, repos, single")
        return v

    def language_of(self, suffix: str) -> str | None:
        """Language of a file extension (case-insensitive), or None when it is not ingested."""
        for lang, exts in self.languages.items():
            if suffix.lower() in (e.lower() for e in exts):
                return lang
        return None


class IngestConfig(Section):
    web: WebIngestConfig = WebIngestConfig()
    books: BooksIngestConfig = BooksIngestConfig()
    code: CodeIngestConfig = CodeIngestConfig()

    @model_validator(mode="before")
    @classmethod
    def _shared_executor(cls, data):
        return inherit_default(data, "executor", ("web", "books", "code"))
