"""fetch: where each source's raw files come from."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section, inherit_default

SOURCES = ("web", "books", "code", "eval", "reference")


class SourceFetchConfig(Section):
    uris: list[str] = Field(min_length=1)
    """Local paths, globs, directories, http(s) URLs or git URLs. `{stdlib}` expands to this Python's stdlib."""
    mirror: str | None = None
    """Offline mirror directory searched by file name before any download (env TINYFOUNDRY_MIRROR overrides)."""
    timeout_s: float = Field(60.0, gt=0)
    """Per-download timeout."""
    exclude: list[str] = []
    """Glob patterns (relative to a fetched directory) that are not copied, e.g. `site-packages/**`."""


class FetchConfig(Section):
    web: SourceFetchConfig
    books: SourceFetchConfig
    code: SourceFetchConfig
    eval: SourceFetchConfig
    reference: SourceFetchConfig
    """Known-good human-written text: the quality classifier's positives (`.txt[.gz]` files, one document each,
    or `.jsonl[.gz]` with a `text` field). Keep it apart from the web sample and from evaluation sets."""

    @model_validator(mode="before")
    @classmethod
    def _shared_defaults(cls, data):
        for key in ("mirror", "timeout_s"):
            data = inherit_default(data, key, SOURCES)
        return data
