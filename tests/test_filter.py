"""Quality filter stage: heuristics on realistic and hand-made pages, the classifier, outputs, bad input."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tasks.config import ConfigError, parse_config
from tasks.config.filter import ClassifierConfig, FilterConfig, SourceFilterConfig
from tasks.docs import doc_files, iter_docs, write_docs

SMALL_EXECUTOR = {"kind": "local", "tasks": 1, "workers": 1}

BOOK = """It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in
want of a wife. However little known the feelings or views of such a man may be on his first entering a
neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered
the rightful property of some one or other of their daughters.

"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?"
Mr. Bennet replied that he had not. "But it is," returned she; "for Mrs. Long has just been here, and she
told me all about it." Mr. Bennet made no answer. "Do you not want to know who has taken it?" cried his
wife impatiently. "You want to tell me, and I have no objection to hearing it." This was invitation enough.
"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a young man of large fortune from
the north of England; that he came down on Monday in a chaise and four to see the place, and was so much
delighted with it, that he agreed with Mr. Morris immediately; that he is to take possession before
Michaelmas, and some of his servants are to be in the house by the end of next week."
"""

DOCS_PAGE = """The for statement in Python differs a bit from what you may be used to in C or Pascal. Rather than
always iterating over an arithmetic progression of numbers, or giving the user the ability to define both the
iteration step and halting condition, the for statement iterates over the items of any sequence, in the order
that they appear in the sequence.
Code that modifies a collection while iterating over that same collection can be tricky to get right. Instead,
it is usually more straight-forward to loop over a copy of the collection or to create a new collection.
If you do need to iterate over a sequence of numbers, the built-in function range() comes in handy. It
generates arithmetic progressions. The given end point is never part of the generated sequence; range(10)
generates 10 values, the legal indices for items of a sequence of length 10. It is possible to let the range
start at another number, or to specify a different increment, even negative; sometimes this is called the step.
The break statement breaks out of the innermost enclosing for or while loop. A for or while loop can include
an else clause. In a for loop, the else clause is executed after the loop reaches its final iteration.
"""

NAVIGATION = "\n".join(["Home", "About us", "Products", "Services", "Blog", "Contact", "Login", "Sign up",
                        "Privacy", "Terms", "Sitemap", "Careers", "Press", "Help", "FAQ", "Support"] * 3)
LINK_FARM = "\n".join(f"cheap-{w}-online.example.com/best-{w}-deals buy {w} now"
                      for w in ["shoes", "watches", "pills", "loans", "bags", "phones", "tickets", "games"] * 6)
NEAR_EMPTY = "404 Not Found"

PY_CODE = '''"""Small utilities for reading configuration files."""
import json
from pathlib import Path


def load(path):
    """Return the parsed JSON object stored at path."""
    with open(Path(path)) as f:
        return json.load(f)


def save(obj, path):
    Path(path).write_text(json.dumps(obj, indent=2))
'''


def _doc(text: str, source: str, i: int, **meta) -> dict:
    return {"text": text, "id": f"{source}-{i}", "metadata": {"source": source, **meta}}


def _heuristics_verdicts(cfg: FilterConfig, docs: list[dict], tmp_path: Path) -> dict[str, str | bool]:
    """Run the heuristic steps in-process; id → True (kept) or the reject reason."""
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result

    from tasks.filter.heuristics import heuristic_steps

    steps = heuristic_steps(cfg, tmp_path / "rejects")
    verdicts = {}
    for d in docs:
        doc = Document(text=d["text"], id=d["id"], metadata=dict(d["metadata"]))
        verdicts[d["id"]] = True
        for step in steps:
            keep, reason = get_filter_result(step.filter(doc))
            if not keep:
                verdicts[d["id"]] = reason
                break
    return verdicts


def test_heuristics_keep_clean_prose_and_drop_boilerplate(tmp_path):
    cfg = FilterConfig()
    docs = [_doc(BOOK, "books", 0), _doc(DOCS_PAGE, "web", 1, domain="docs.python.org"),
            _doc(NAVIGATION, "web", 2), _doc(LINK_FARM, "web", 3), _doc(NEAR_EMPTY, "web", 4),
            _doc("Welcome! Click here. Click here. Click here.", "web", 5), _doc(PY_CODE, "code", 6),
            _doc(BOOK, "poetry", 7), _doc("   ", "web", 8)]
    v = _heuristics_verdicts(cfg, docs, tmp_path)
    assert v["books-0"] is True and v["web-1"] is True and v["code-6"] is True, v
    for dropped in ("web-2", "web-3", "web-4", "web-5"):
        assert isinstance(v[dropped], str) and "/" in v[dropped], (dropped, v[dropped])
    assert v["web-4"].startswith("gopher_quality/"), v["web-4"]
    assert v["poetry-7"] == "input/unknown_source" and v["web-8"] == "input/empty_text"


def test_prose_filters_are_not_applied_to_code(tmp_path):
    # a normal Python module fails Gopher's prose rules, yet the code source keeps it
    prose_only = FilterConfig(web=SourceFilterConfig(heuristics={"gopher_quality": {}}))
    v = _heuristics_verdicts(prose_only, [_doc(PY_CODE, "web", 0), _doc(PY_CODE, "code", 1)], tmp_path)
    assert v["web-0"] != True and v["code-1"] is True  # noqa: E712
    with pytest.raises(ValueError, match="prose filters"):
        FilterConfig(code=SourceFilterConfig(heuristics={"gopher_quality": {}}))


def test_code_checks(tmp_path):
    cfg = FilterConfig()
    minified = "var a=" + ";".join(f"b{i}=function(x){{return x*{i}}}" for i in range(200)) + "\n" + PY_CODE
    data = "\n".join(", ".join(str(i * j) for j in range(12)) + "," for i in range(60))
    generated = "# Code generated by protoc. DO NOT EDIT.\n" + PY_CODE
    v = _heuristics_verdicts(cfg, [_doc(PY_CODE, "code", 0), _doc(minified, "code", 1), _doc(data, "code", 2),
                                   _doc(generated, "code", 3), _doc("x = 1\n", "code", 4)], tmp_path)
    assert v == {"code-0": True, "code-1": "code/long_line", "code-2": "code/data_file",
                 "code-3": "code/auto_generated", "code-4": "code/too_few_lines"}


def test_config_errors_name_the_problem():
    base = {"fetch": {}}
    with pytest.raises(ConfigError, match=r"filter\.web\.heuristics.*unknown heuristic 'gopher'"):
        parse_config({**base, "filter": {"web": {"heuristics": {"gopher": {}}}}})
    with pytest.raises(ConfigError, match=r"filter\.classifier\.negative_sources.*unknown source selector"):
        parse_config({**base, "filter": {"classifier": {"negative_sources": ["web:spam"]}}})
    with pytest.raises(ConfigError, match=r"filter\.classifier\.heldout_fraction"):
        parse_config({**base, "filter": {"classifier": {"heldout_fraction": 1.5}}})
    cfg = FilterConfig(web=SourceFilterConfig(heuristics={"c4": {"min_sentences": 3}}))
    with pytest.raises(ValueError, match=r"filter\.web\.heuristics\.c4: unknown argument.*min_sentences"):
        cfg.check_heuristic_kwargs()


def test_params_yaml_filter_section_is_valid():
    from tasks.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml").filter
    cfg.check_heuristic_kwargs()
    assert "code" in cfg.code.heuristics and "gopher_quality" in cfg.web.heuristics


def _synthetic_inputs(folder: Path, n: int = 40) -> None:
    """A small realistic-looking input: prose variants (books/docs) and boilerplate variants (web)."""
    import random

    rng = random.Random(0)
    words = (BOOK + DOCS_PAGE).split()
    good = [" ".join(rng.sample(words, 150)) + ".\n" + BOOK for _ in range(n)]
    bad = ["\n".join(rng.sample(NAVIGATION.splitlines(), 12)) + "\n" + "\n".join(
        rng.sample(LINK_FARM.splitlines(), 10)) + "\nCopyright 2020. All rights reserved. Cookies help us." for _ in range(n)]
    docs = [_doc(t, "books", i) for i, t in enumerate(good[: n // 2])]
    docs += [_doc(t, "web", 100 + i, domain="docs.python.org") for i, t in enumerate(good[n // 2:])]
    docs += [_doc(t, "web", 200 + i, domain="spam.example.com") for i, t in enumerate(bad)]
    docs += [_doc(PY_CODE, "code", 300)]
    write_docs(folder / "docs" / "00000.jsonl.gz", docs)


def _cfg(**classifier) -> FilterConfig:
    return FilterConfig(executor=SMALL_EXECUTOR, classifier=ClassifierConfig(epoch=5, **classifier))


def test_bad_input_is_counted_not_fatal(tmp_path):
    from tasks.filter import run_filter

    _synthetic_inputs(tmp_path / "in")
    shard = tmp_path / "in" / "docs" / "00001.jsonl.gz"
    with gzip.open(shard, "wt") as f:
        f.write(json.dumps(_doc(BOOK, "books", 900)) + "\n{not json\n")
        f.write(json.dumps({"text": BOOK, "id": "nosource", "metadata": {}}) + "\n")
    with gzip.open(shard, "ab") as f:
        f.write(b'{"text": "caf\xe9 latin-1 bytes", "id": "latin1", "metadata": {"source": "web"}}\n')
    good = gzip.compress(((json.dumps(_doc(BOOK * 2, "books", 901)) + "\n") * 50).encode())
    (tmp_path / "in" / "docs" / "00002.jsonl.gz").write_bytes(good[: len(good) // 2])  # truncated shard
    stats = run_filter(_cfg(), {"docs": tmp_path / "in"}, tmp_path / "out")
    assert stats["damaged_files"] == 1 and stats["skipped_unreadable"] >= 2  # bad JSON, not UTF-8 (+ cut line)
    assert stats["rejected_by_reason"]["input/unknown_source"] == 1
    rejects = {d["id"]: d for d in iter_docs(tmp_path / "out", "rejects")}
    assert rejects["nosource"]["metadata"]["reject_reason"] == "input/unknown_source"
    assert all("quality_score" in d["metadata"] for d in rejects.values())


def test_stage_outputs_thresholds_and_existing_model(tmp_path):
    from tasks.filter import run_filter

    _synthetic_inputs(tmp_path / "in")
    cfg = _cfg()
    stats = run_filter(cfg, {"docs": tmp_path / "in"}, tmp_path / "a")
    assert (tmp_path / "a" / "quality_model.bin").is_file()
    kept = list(iter_docs(tmp_path / "a"))
    rejects = list(iter_docs(tmp_path / "a", "rejects"))
    assert len(kept) + len(rejects) == stats["docs_in"] == 81
    assert all(0 <= d["metadata"]["quality_score"] <= 1 for d in kept + rejects)
    assert stats["classifier"]["trained"] and stats["classifier"]["heldout_docs"] > 0
    assert sum(stats["kept"].values()) == stats["docs_kept"]

    # an existing model, a score threshold for web and keep-top-fraction for books
    over = cfg.model_copy(update={
        "classifier": cfg.classifier.model_copy(update={"model_path": str(tmp_path / "a" / "quality_model.bin")}),
        "web": cfg.web.model_copy(update={"min_quality_score": 0.5}),
        "books": cfg.books.model_copy(update={"keep_top_fraction": 0.5})})
    stats_b = run_filter(over, {"docs": tmp_path / "in"}, tmp_path / "b")
    assert not stats_b["classifier"]["trained"]
    assert (tmp_path / "b" / "quality_model.bin").read_bytes() == (tmp_path / "a" / "quality_model.bin").read_bytes()
    kept_b = list(iter_docs(tmp_path / "b"))
    assert all(d["metadata"]["quality_score"] >= 0.5 for d in kept_b if d["metadata"]["source"] == "web")
    assert stats_b["kept"]["books"] == pytest.approx(stats["kept"]["books"] / 2, abs=1)
    below = [d for d in iter_docs(tmp_path / "b", "rejects") if d["metadata"]["reject_reason"] == "classifier/below_threshold"]
    assert below and all(d["metadata"]["quality_score"] < d["metadata"]["quality_threshold"] for d in below)


@pytest.fixture(scope="module")
def real_input(shared_data, request, tmp_path_factory) -> Path:
    """A slice of the real shared data shaped like dedup output (80 pages per WARC, 8 books, 40 stdlib files).
    trafilatura takes ~30 s on it, so the slice is kept in pytest's cache between runs."""
    from tasks.filter.sample import build_sample

    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    folder = cache.mkdir("tinyfoundry_filter_real_v2") if cache else tmp_path_factory.mktemp("filter_real")
    if not (folder / "docs" / "web.jsonl.gz").exists():
        build_sample(shared_data, folder, web_per_file=80, books=8, code_files=40)
    return folder


@pytest.mark.slow
@pytest.mark.needs_shared_data
def test_real_data_classifier_and_determinism(real_input, tmp_path):
    from tasks.filter import run_filter

    cfg = FilterConfig(executor={"kind": "local", "tasks": 2, "workers": 2})
    stats = run_filter(cfg, {"docs": real_input}, tmp_path / "a")
    c = stats["classifier"]
    assert c["f1"] >= 0.85 and c["roc_auc"] >= 0.85, c
    kept = {d["id"]: d for d in iter_docs(tmp_path / "a")}
    books_in = [d for d in iter_docs(real_input) if d["metadata"]["source"] == "books"]
    assert all(b["id"] in kept for b in books_in), "a clean Gutenberg book was dropped"
    docs_pages = [d for d in iter_docs(real_input) if d["metadata"].get("domain") in cfg.classifier.docs_domains]
    assert sum(d["id"] in kept for d in docs_pages) / len(docs_pages) >= 0.6
    rejects = {d["id"]: d for d in iter_docs(tmp_path / "a", "rejects")}
    raw = [d for d in iter_docs(real_input) if d["metadata"]["source"] == "web"
           and d["metadata"]["domain"] not in cfg.classifier.docs_domains]
    assert sum(d["id"] in rejects for d in raw) / len(raw) >= 0.8, "most raw crawl pages should be dropped"
    assert all(d["metadata"]["reject_reason"] for d in rejects.values())
    assert stats["docs_in"] == sum(1 for _ in iter_docs(real_input))

    run_filter(cfg, {"docs": real_input}, tmp_path / "b")
    for sub in ("docs", "rejects"):
        a, b = doc_files(tmp_path / "a", sub), doc_files(tmp_path / "b", sub)
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b)), f"{sub} differ between runs"
    assert (tmp_path / "a" / "quality_model.bin").read_bytes() == (tmp_path / "b" / "quality_model.bin").read_bytes()
