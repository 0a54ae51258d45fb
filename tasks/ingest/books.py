"""Books: Project Gutenberg plain text (any encoding) → the book's own text, header and license stripped.

Pipeline: GutenbergBooks (decode, normalise newlines, cut at the `*** START OF` / `*** END OF` markers,
read title/author/ebook number/language from the header, optionally split into chapter-sized parts)
→ DocsWriter.
"""
from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path

from datatrove.data import Document

from tasks.config.languages import NAMES as LANGUAGES

from .common import DocsWriter, RejectingReader, docs_writer, rejects_writer, split_input

BOOK_NAME = re.compile(r"\.txt(\.gz)?$", re.I)
START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK", re.I | re.M)
END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK", re.I | re.M)
# older texts: the small-print license ends with "*END*THE SMALL PRINT!..." and the text ends with "End of ..."
OLD_START = re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.I | re.M)
END_LINE = re.compile(r"^\s*End of (?:the |this )?Project Gutenberg'?s?\b.*$", re.I | re.M)
CREDITS = re.compile(r"^\s*(?:Produced by|E-text prepared by|Transcribed from|This e-?text was prepared)\b", re.I)
FIELD = re.compile(r"^(Title|Author|Language|Release Date|Posting Date|Character set encoding):[ \t]*(.*)$", re.M)
EBOOK_NO = re.compile(r"\[\s*e-?book\s*#\s*(\d+)\s*\]", re.I)
CHAPTER = re.compile(r"^(?:CHAPTER|Chapter|BOOK|Book|PART|Part|LETTER|Letter|ACT|Act|STAVE|Stave)\s+"
                     r"(?:[IVXLCDM]+|\d+|[A-Z][a-z]+)\b.*$", re.M)

WESTERN = {"english", "french", "german", "spanish", "italian", "dutch", "portuguese", "latin", "finnish",
           "swedish", "danish", "norwegian", "icelandic", "catalan", "esperanto"}


def decode_book(raw: bytes, declared: str | None, language: str = "") -> tuple[str, str] | None:
    """(text, encoding): UTF-8, else the header's declared charset, else (Western-language books) ISO-8859-1 /
    Windows-1252 — the legacy encodings Gutenberg used for them —, else charset-normalizer's guess."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    replaced = raw.decode("utf-8", errors="replace")
    bad = replaced.count("\ufffd")
    if sum(ord(c) > 127 for c in replaced) - bad > bad:  # UTF-8 with a few broken bytes: keep, mark them
        return replaced, "utf-8-replaced"
    if declared:
        charset = declared.split("(")[0].strip().lower()
        try:
            return raw.decode(charset), charset
        except (UnicodeDecodeError, LookupError):
            pass  # headers lie: pg21937 declares US-ASCII and is ISO-8859-1
    if language.split(",")[0].strip().lower() in WESTERN:
        # charset-normalizer calls ISO-8859-1 English "cp1250" and would turn ð/þ into đ/ţ
        if not re.search(rb"[\x80-\x9f]", raw):
            return raw.decode("iso-8859-1"), "iso-8859-1"
        try:
            return raw.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[:2_000_000]).best()
    if best is not None:
        try:
            return raw.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    return None


def header_fields(header: str) -> dict:
    fields = {}
    for key, value in FIELD.findall(header):
        fields.setdefault(key.lower(), value.strip())
    return fields


def strip_gutenberg(text: str) -> tuple[str, str] | str:
    """(header, body) with everything up to the START marker line and from the END marker on removed;
    a reason string when the markers are missing (then license text could remain, so the book is dropped)."""
    start = START.search(text) or OLD_START.search(text)
    if not start:
        return "no_start_marker"
    # the marker line ends with "***", sometimes on the next line (long titles wrap)
    close = text.find("***", start.end(), start.end() + 400)
    body_from = text.find("\n", close + 3 if close >= 0 else start.end())
    body_from = len(text) if body_from < 0 else body_from + 1
    end = END.search(text, body_from) or END_LINE.search(text, body_from)
    if not end:
        return "no_end_marker"
    header, body = text[:start.start()], text[body_from:end.start()]
    body = END_LINE.split(body)[0] if END_LINE.search(body) else body  # "End of the Project Gutenberg EBook of X"
    paragraphs = body.strip("\n").split("\n\n")
    while paragraphs and (not paragraphs[0].strip() or CREDITS.match(paragraphs[0])):
        paragraphs.pop(0)  # "Produced by ..." credits right after the marker
    return header, "\n\n".join(paragraphs).strip() + "\n"


def parse_book(raw: bytes) -> tuple[str, str, str] | str:
    """(header, body, encoding) of a Gutenberg book's (uncompressed) bytes: decoded, newlines normalised,
    header and footer cut at the markers. A reject reason string when that cannot be done safely."""
    if not raw.strip():
        return "empty"
    if b"\x00" in raw[:65536]:
        return "binary"
    fields = header_fields(raw[:20000].decode("latin-1"))
    decoded = decode_book(raw, fields.get("character set encoding"), fields.get("language", ""))
    if decoded is None:
        return "decode_error"
    text, encoding = decoded
    stripped = strip_gutenberg(text.replace("\r\n", "\n").replace("\r", "\n"))
    if isinstance(stripped, str):
        return stripped
    return (*stripped, encoding)


def split_book(text: str, max_chars: int) -> list[str]:
    """Chapter-sized parts of at most ~max_chars: cut at chapter headings, pack consecutive chapters,
    and cut over-long chapters at paragraph breaks."""
    if max_chars <= 0 or len(text) <= max_chars:
        return [text]
    cuts = [m.start() for m in CHAPTER.finditer(text)]
    sections = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if text[a:b].strip()]
    pieces: list[str] = []
    for section in sections:
        while len(section) > max_chars:
            cut = section.rfind("\n\n", 0, max_chars)
            cut = cut if cut > max_chars // 4 else max_chars
            pieces.append(section[:cut])
            section = section[cut:]
        pieces.append(section)
    parts, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            parts.append(current)
            current = ""
        current += piece
    if current.strip():
        parts.append(current)
    return [p.strip("\n") + "\n" for p in parts]


class GutenbergBooks(RejectingReader):
    """Reads `*.txt` / `*.txt.gz` Gutenberg books, one (or, split, several) document per book."""

    name = "📚 Gutenberg books"

    def __init__(self, data_folder, rejects: DocsWriter, min_chars: int, split_chars: int,
                 glob_pattern: str | None = None, max_book_bytes: int = 64_000_000):
        super().__init__(data_folder, rejects, glob_pattern)
        self.min_chars, self.split_chars, self.max_book_bytes = min_chars, split_chars, max_book_bytes

    def read_file(self, filepath: str):
        name = Path(filepath).name
        number = re.search(r"(\d+)", name)
        book_id = f"pg{number.group(1)}" if number else re.sub(r"\.txt(\.gz)?$", "", name, flags=re.I)
        meta = {"source": "books", "source_file": name}
        if not BOOK_NAME.search(name):
            self.reject(book_id, "not_text_file", **meta)
            return
        cap = self.max_book_bytes
        try:
            size = self.data_folder.size(filepath)
            if size > cap:
                self.reject(book_id, "too_large", file_bytes=size, max_book_bytes=cap, **meta)
                return
            with self.data_folder.open(filepath, "rb") as f:
                raw = f.read(cap + 1)
        except Exception as e:  # noqa: BLE001
            self.reject(book_id, "unreadable_file", error=repr(e)[:300], **meta)
            return
        if name.lower().endswith(".gz") or raw[:2] == b"\x1f\x8b":
            try:  # never more than cap + 1 bytes inflated: a gzip bomb is a reject, not an out-of-memory crash
                with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                    raw = gz.read(cap + 1)
            except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt: the footer is gone, drop the book
                self.reject(book_id, "corrupt_gzip", error=repr(e)[:300], **meta)
                return
            if len(raw) > cap:
                self.reject(book_id, "too_large", file_bytes=size, inflates_beyond=cap, **meta)
                return
        parsed = parse_book(raw)
        if isinstance(parsed, str):
            self.reject(book_id, parsed, **meta)
            return
        header, body, encoding = parsed
        fields = header_fields(header)
        ebook = EBOOK_NO.search(header)
        language = fields.get("language", "")
        meta |= {
            "title": " ".join(fields.get("title", "").split()) or None,
            "author": fields.get("author") or None,
            "ebook_number": int(ebook.group(1)) if ebook else (int(number.group(1)) if number else None),
            "language": language or None,
            "lang": LANGUAGES.get(language.split(",")[0].strip().lower(), language.lower() or None),
            "encoding": encoding,
        }
        if len(body.strip()) < self.min_chars:  # checked on the whole book, before any split
            self.reject(book_id, "too_short", text=body, **meta)
            return
        parts = split_book(body, self.split_chars)
        for i, part in enumerate(parts):
            extra = {"part": i, "parts": len(parts)} if len(parts) > 1 else {}
            yield Document(text=part, id=f"{book_id}/{i:04d}" if extra else book_id, metadata={**meta, **extra})


def build_pipeline(cfg, raw: Path, output: Path) -> list:
    folder, glob = split_input(raw)
    return [
        GutenbergBooks(folder, rejects_writer(output, "read"), cfg.min_chars, cfg.split_chars, glob_pattern=glob,
                       max_book_bytes=cfg.max_book_bytes),
        docs_writer(output),
    ]
