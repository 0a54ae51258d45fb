"""ingest: raw files of each source → clean documents (datatrove JSONL)."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section, inherit_default
from .executor import ExecutorConfig


class WebIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    languages: list[str] = ["en"]
    """Languages kept (ISO 639-1), identified offline with fastText lid.176."""
    language_threshold: float = Field(0.65, ge=0, le=1)
    min_chars: int = Field(200, ge=0)
    """Documents with less extracted main text are dropped."""
    url_blocklist: list[str] = []
    """Domains (and their subdomains) whose pages are dropped."""


class BooksIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    min_chars: int = Field(1000, ge=0)
    split_chars: int = Field(0, ge=0)
    """Split books longer than this many characters into chapter-sized documents; 0 keeps whole books."""


class CodeIngestConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    languages: dict[str, list[str]] = {
        "python": [".py"], "c": [".c", ".h"], "c++": [".cc", ".cpp", ".hpp", ".cxx"],
        "javascript": [".js", ".mjs"], "shell": [".sh", ".bash"],
    }
    """Language → file extensions that are ingested; other files are skipped with a reason."""
    skip_dirs: list[str] = [".git", "node_modules", "build", "dist", "__pycache__", "site-packages", "vendor"]
    max_file_bytes: int = Field(1_000_000, gt=0)
    max_line_length: int = Field(1000, gt=0)
    max_mean_line_length: float = Field(100.0, gt=0)
    min_alnum_fraction: float = Field(0.25, ge=0, le=1)


class IngestConfig(Section):
    web: WebIngestConfig = WebIngestConfig()
    books: BooksIngestConfig = BooksIngestConfig()
    code: CodeIngestConfig = CodeIngestConfig()

    @model_validator(mode="before")
    @classmethod
    def _shared_executor(cls, data):
        return inherit_default(data, "executor", ("web", "books", "code"))
