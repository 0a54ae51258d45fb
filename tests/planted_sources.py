"""Real source files with benchmark items planted in them: a Gutenberg book, a documentation page in a WARC and a
Python module, each holding PIQA and OpenBookQA items the way pages print them. For tests that follow the items
from fetch to the tokenizer's input."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def benchmark_items(eval_dir: Path, per_task: int = 3, min_words: int = 14) -> list[dict]:
    """The first `per_task` PIQA and OpenBookQA items whose printed form has at least `min_words` words."""
    from tasks.decontaminate.ngrams import normal_words
    from tasks.evaluate.benchmarks import read_benchmark

    piqa = read_benchmark("piqa", str(eval_dir / "piqa_valid.jsonl"), str(eval_dir / "piqa_valid-labels.lst"))
    obqa = read_benchmark("openbookqa", str(eval_dir / "openbookqa_main_test.jsonl"))
    items = []
    for task, rows in (("piqa", piqa), ("openbookqa", obqa)):
        found = 0
        for i, row in enumerate(rows):
            if task == "piqa":
                text = f"{row['goal']}\n{row['sol2'] if row['label'] else row['sol1']}"
            else:
                c = row["choices"]
                text = f"{row['question_stem']}\n" + "\n".join(f"({l}) {t}" for l, t in zip(c["label"], c["text"]))
            if len(normal_words(text)) >= min_words:
                items.append({"task": task, "item": i, "text": text})
                found += 1
                if found == per_task:
                    break
    return items


def planted_book(src: Path, dest: Path, texts: list[str]) -> Path:
    """A Gutenberg .txt.gz with the texts as paragraphs spread over its body."""
    lines = gzip.open(src, "rt", encoding="utf-8", newline="").read().split("\r\n")
    for k, text in enumerate(texts):
        at = len(lines) * (k + 1) // (len(texts) + 2)
        lines[at:at] = ["", *text.split("\n"), ""]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(dest, "wt", encoding="utf-8", newline="") as f:
        f.write("\r\n".join(lines))
    return dest


def planted_warc(src: Path, dest: Path, texts: list[str], skip_pages: int = 20) -> Path:
    """One HTML page of a WARC (after `skip_pages`, past the index pages) with the texts as paragraphs of its body."""
    with open(src, "rb") as f:
        seen = 0
        for record in ArchiveIterator(f):
            if record.rec_type != "response" or "html" not in (record.http_headers.get_header("Content-Type") or ""):
                continue
            seen += 1
            html = record.content_stream().read().decode("utf-8")
            if seen > skip_pages and html.count("</p>") >= 6:
                uri = record.rec_headers.get_header("WARC-Target-URI")
                break
    for k, text in enumerate(texts):  # after the 2nd, 4th, ... paragraph
        at = _nth(html, "</p>", 2 * (k + 1)) + len("</p>")
        html = html[:at] + "\n<p>" + "<br>\n".join(text.split("\n")) + "</p>\n" + html[at:]
    body = html.encode("utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                              ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers))
    return dest


def planted_module(dest: Path, texts: list[str]) -> Path:
    """A small Python module whose docstrings quote the texts."""
    parts = ['"""Examples for the quiz helpers."""\n', "import json\n"]
    for k, text in enumerate(texts):
        parts.append(f'\ndef example_{k}():\n    """{text}"""\n    return json.dumps({{"example": {k}}})\n')
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(parts))
    return dest


def _nth(text: str, needle: str, n: int) -> int:
    at = -1
    for _ in range(n):
        at = text.index(needle, at + 1)
    return at


def plant_sources(shared_data: Path, folder: Path) -> tuple[dict, list[dict]]:
    """Planted copies of real sources in `folder`: (fetch URIs to add per source, the planted items with where)."""
    items = benchmark_items(shared_data / "eval")
    texts = [i["text"] for i in items]
    paths = {"books": planted_book(shared_data / "books" / "pg16.txt.gz", folder / "books" / "pg16-planted.txt.gz", texts),
             "web": planted_warc(shared_data / "web" / "python-docs-3.11.warc.gz", folder / "web" / "planted.warc.gz",
                                 texts),
             "code": planted_module(folder / "code" / "quiz_examples.py", texts)}
    (folder / "planted.json").write_text(json.dumps(items, indent=1))
    return {source: str(path) for source, path in paths.items()}, items
