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
    with pytest.raises(ConfigError, match=r"filter\.classifier\.negative_pool"):
        parse_config({**base, "filter": {"classifier": {"negative_pool": "random"}}})
    with pytest.raises(ConfigError, match=r"filter\.classifier\.docs_domains is not a known key"):
        parse_config({**base, "filter": {"classifier": {"docs_domains": ["docs.python.org"]}}})
    for key, value in (("min_f1", 1.5), ("max_drop_fraction", -0.1), ("min_heldout_per_class", 0)):
        with pytest.raises(ConfigError, match=rf"filter\.classifier\.{key}"):
            parse_config({**base, "filter": {"classifier": {key: value}}})
    with pytest.raises(ConfigError, match=r"filter\.web\.keep_top_fraction"):
        parse_config({**base, "filter": {"web": {"keep_top_fraction": 0}}})
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


def _prose(rng, n_words: int = 160) -> str:
    """Sentences of the two clean passages in a random order, none twice: varied, well-formed prose."""
    import re

    sentences = re.split(r"(?<=[.!?])\s+", " ".join((BOOK + DOCS_PAGE).split()))
    rng.shuffle(sentences)
    out = []
    while sentences and sum(len(x.split()) for x in out) < n_words:
        out.append(sentences.pop())
    return " ".join(out)


def _junk(rng) -> str:
    return ("\n".join(rng.sample(NAVIGATION.splitlines(), 12)) + "\n" + "\n".join(rng.sample(LINK_FARM.splitlines(), 10))
            + "\nCopyright 2020. All rights reserved. Cookies help us.")


def _synthetic_inputs(folder: Path, n: int = 40, good_web: int = 0) -> None:
    """A small realistic-looking input and its reference corpus: `folder/docs` holds books (prose), web pages
    from unlisted domains (`n` boilerplate pages, `good_web` prose pages) and one code file; `folder/reference`
    holds `n` prose documents as .txt files (two of them gzip) and a JSONL file of `n // 2` more."""
    import random

    rng = random.Random(0)
    docs = [_doc(_prose(rng, 400), "books", i) for i in range(n // 2)]
    docs += [_doc(_junk(rng), "web", 200 + i, domain=f"shop{i % 7}.example.net") for i in range(n)]
    docs += [_doc(_prose(rng), "web", 400 + i, domain=f"blog{i % 5}.example.org") for i in range(good_web)]
    docs += [_doc(PY_CODE, "code", 300)]
    write_docs(folder / "docs" / "00000.jsonl.gz", docs)
    ref = folder / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = _prose(rng, 300)
        if i % 20 == 0:
            (ref / f"essay{i}.txt.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (ref / f"essay{i}.txt").write_text(text)
    (ref / "more.jsonl").write_text("".join(json.dumps({"text": _prose(rng, 300), "n": i}) + "\n" for i in range(n // 2)))


def _inputs(folder: Path) -> dict[str, Path]:
    return {"docs": folder, "reference": folder / "reference"}


def _cfg(web: dict | None = None, **classifier) -> FilterConfig:
    return FilterConfig(executor=SMALL_EXECUTOR, classifier=ClassifierConfig(**{"epoch": 5, **classifier}),
                        web=FilterConfig().web.model_copy(update=web or {}))


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
    stats = run_filter(_cfg(), _inputs(tmp_path / "in"), tmp_path / "out")
    assert stats["damaged_files"] == 1 and stats["skipped_unreadable"] >= 2  # bad JSON, not UTF-8 (+ cut line)
    assert stats["rejected_by_reason"]["input/unknown_source"] == 1
    rejects = {d["id"]: d for d in iter_docs(tmp_path / "out", "rejects")}
    assert rejects["nosource"]["metadata"]["reject_reason"] == "input/unknown_source"
    assert all("quality_score" in d["metadata"] for d in rejects.values())


def test_stage_outputs_thresholds_and_existing_model(tmp_path):
    from tasks.filter import run_filter

    _synthetic_inputs(tmp_path / "in", good_web=20)
    cfg = _cfg()
    stats = run_filter(cfg, _inputs(tmp_path / "in"), tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").glob("quality_model*.bin")) == [
        "quality_model.fold0.bin", "quality_model.fold1.bin"]  # one model per cross-fitting fold
    kept = list(iter_docs(tmp_path / "a"))
    rejects = list(iter_docs(tmp_path / "a", "rejects"))
    assert len(kept) + len(rejects) == stats["docs_in"] == 81
    assert all(0 <= d["metadata"]["quality_score"] <= 1 for d in kept + rejects)
    c = stats["classifier"]
    assert c["trained"] and c["validated"] == 1 and c["reference_docs"] == 60, c  # 40 .txt(.gz) + 20 JSONL lines
    assert sum(stats["kept"].values()) == stats["docs_kept"]
    # the default relative cut: the top 90% of the web pages that passed the heuristics, realised and logged
    web_cut = stats["cuts"]["web"]
    assert web_cut["docs"] == 20 and web_cut["would_drop"] == 2 and stats["kept"]["web"] == 18, web_cut
    assert stats["thresholds"]["web"] == web_cut["threshold"] > 0

    # an existing model, an absolute score for web and keep-top-fraction for books
    over = cfg.model_copy(update={
        "classifier": cfg.classifier.model_copy(update={"model_path": str(tmp_path / "a" / "quality_model.fold0.bin")}),
        "web": cfg.web.model_copy(update={"min_quality_score": 0.5, "keep_top_fraction": None}),
        "books": cfg.books.model_copy(update={"keep_top_fraction": 0.5})})
    stats_b = run_filter(over, _inputs(tmp_path / "in"), tmp_path / "b")
    assert not stats_b["classifier"]["trained"]
    assert (tmp_path / "b" / "quality_model.bin").read_bytes() == (tmp_path / "a" / "quality_model.fold0.bin").read_bytes()
    kept_b = list(iter_docs(tmp_path / "b"))
    assert all(d["metadata"]["quality_score"] >= 0.5 for d in kept_b if d["metadata"]["source"] == "web")
    assert stats_b["kept"]["books"] == pytest.approx(20 / 2, abs=1) and stats_b["cuts"]["books"]["would_drop"] == 10
    below = [d for d in iter_docs(tmp_path / "b", "rejects") if d["metadata"]["reject_reason"] == "classifier/below_threshold"]
    assert below and all(d["metadata"]["quality_score"] < d["metadata"]["quality_threshold"] for d in below)


def test_unlisted_domains_are_not_wiped_out(tmp_path):
    """Good pages from domains named nowhere in the config keep (nearly) all their pages, with the default
    relative cut and with an absolute one: the labels are a reference corpus vs a sample of the web source."""
    from tasks.filter import run_filter

    _synthetic_inputs(tmp_path / "in", good_web=20)
    for name, web in (("relative", None), ("absolute", {"min_quality_score": 0.5, "keep_top_fraction": None})):
        stats = run_filter(_cfg(web=web, epoch=25), _inputs(tmp_path / "in"), tmp_path / name)
        assert stats["classifier"]["validated"] == 1, stats["classifier"]
        passed = stats["cuts"]["web"]["docs"]
        assert passed == 20 and stats["kept"]["web"] / passed >= 0.8, (name, stats["cuts"]["web"])
        kept = {d["metadata"]["domain"] for d in iter_docs(tmp_path / name) if d["metadata"]["source"] == "web"}
        assert kept == {f"blog{i}.example.org" for i in range(5)}, name


def test_unvalidated_classifier_drops_nothing(tmp_path, caplog):
    """Too few held-out reference documents, or an F1 under min_f1: the classifier scores but drops nothing,
    and says so; require_validated turns that into an error."""
    import logging

    from tasks.filter import run_filter
    from tasks.filter.stage import ClassifierNotValidated

    _synthetic_inputs(tmp_path / "in", good_web=20)
    for path in sorted((tmp_path / "in" / "reference").iterdir())[3:]:  # 3 reference documents remain
        path.unlink()
    strict_web = {"min_quality_score": 0.99, "keep_top_fraction": 0.5}  # would drop about half the pages
    with caplog.at_level(logging.WARNING, logger="tinyfoundry.filter"):
        stats = run_filter(_cfg(web=strict_web), _inputs(tmp_path / "in"), tmp_path / "few")
    c = stats["classifier"]
    assert c["validated"] == 0 and "min_heldout_per_class" in c["not_validated_because"], c
    assert stats["kept"]["web"] == stats["cuts"]["web"]["docs"] == 20 and stats["thresholds"]["web"] == 0.0
    assert "classifier/below_threshold" not in stats["rejected_by_reason"]
    assert all("quality_score" in d["metadata"] for d in iter_docs(tmp_path / "few"))
    assert any("not validated" in r.getMessage() and "drops nothing" in r.getMessage() for r in caplog.records)
    with pytest.raises(ClassifierNotValidated, match="require_validated"):
        run_filter(_cfg(web=strict_web, require_validated=True), _inputs(tmp_path / "in"), tmp_path / "strict")

    # enough held-out documents, but an F1 bar it cannot reach: validated only by its own measure, not ours
    _synthetic_inputs(tmp_path / "in2", good_web=20)
    stats = run_filter(_cfg(web=strict_web, min_f1=1.0, lr=0.01, epoch=1, folds=1), _inputs(tmp_path / "in2"),
                       tmp_path / "f1")
    assert [p.name for p in (tmp_path / "f1").glob("quality_model*.bin")] == ["quality_model.bin"]  # no cross-fitting
    c = stats["classifier"]
    assert c["validated"] == 0 and c["f1"] < 1.0 and "min_f1" in c["not_validated_because"], c
    assert stats["kept"]["web"] == 20 and "classifier/below_threshold" not in stats["rejected_by_reason"]


def test_drop_guard_names_source_fraction_and_setting(tmp_path):
    from tasks.filter import run_filter
    from tasks.filter.stage import DropGuardError

    _synthetic_inputs(tmp_path / "in", good_web=20)
    strict = {"min_quality_score": 0.95, "keep_top_fraction": None}  # an absolute cut far above these pages
    with pytest.raises(DropGuardError) as err:
        run_filter(_cfg(web=strict), _inputs(tmp_path / "in"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written in place of the output
    stats = run_filter(_cfg(web=strict, max_drop_fraction=1.0), _inputs(tmp_path / "in"), tmp_path / "out")
    cut = stats["cuts"]["web"]
    assert cut["drop_fraction"] > 0.5 and stats["kept"].get("web", 0) == 20 - cut["would_drop"]
    msg = str(err.value)
    assert f"would drop {cut['would_drop']} of 20 web documents" in msg and f"({cut['drop_fraction']:.0%})" in msg, msg
    assert "filter.classifier.max_drop_fraction = 0.5" in msg and "filter.web min_quality_score 0.95" in msg, msg


def test_relative_cut_beyond_the_guard_is_a_config_error():
    with pytest.raises(ConfigError, match=r"filter web\.keep_top_fraction 0\.3 drops 70% .*max_drop_fraction 0\.5"):
        parse_config({"fetch": {}, "filter": {"web": {"keep_top_fraction": 0.3}}})
    cfg = FilterConfig.model_validate({"web": {"keep_top_fraction": 0.3}, "classifier": {"max_drop_fraction": 0.7}})
    assert cfg.web.keep_top_fraction == 0.3


def test_validation_metrics_recomputed_from_scores_and_heldout_never_trained(tmp_path, monkeypatch):
    """Recompute F1 and ROC-AUC from the held-out scores the stage wrote (not its reported figures), and read
    the very file fastText trained on: no chunk of a held-out document is in it."""
    from sklearn.metrics import f1_score, roc_auc_score

    from tasks.filter import classifier as clf
    from tasks.filter import fasttext_fit, run_filter

    trained_on = []
    original = fasttext_fit.fit_in_fresh_process

    def spy(data, model_path, **kwargs):
        trained_on.extend(Path(data).read_text(encoding="utf-8").splitlines())
        return original(data, model_path, **kwargs)

    monkeypatch.setattr(fasttext_fit, "fit_in_fresh_process", spy)
    _synthetic_inputs(tmp_path / "in", good_web=20)
    cfg = _cfg()
    stats = run_filter(cfg, _inputs(tmp_path / "in"), tmp_path / "out")
    c = stats["classifier"]
    rows = [json.loads(line) for line in gzip.open(tmp_path / "out" / "quality_labels.jsonl.gz", "rt")]
    held = [r for r in rows if r["split"] == "heldout"]
    y = [r["label"] == "hq" for r in held]
    scores = [r["score"] for r in held]
    assert sum(y) == c["heldout_hq"] >= 5 and len(y) - sum(y) == c["heldout_lq"] >= 5
    assert f1_score(y, [s >= 0.5 for s in scores]) == pytest.approx(c["f1"], abs=1e-4)
    assert roc_auc_score(y, scores) == pytest.approx(c["roc_auc"], abs=1e-4)

    # the held-out documents' texts, from the inputs themselves, chunked as training chunks them
    texts = {d["id"]: d["text"] for d in iter_docs(tmp_path / "in")}
    texts.update(clf.reference_documents(tmp_path / "in" / "reference"))
    held_chunks = {c for r in held for c in clf.chunks(texts[r["id"]], cfg.classifier.chunk_words,
                                                       cfg.classifier.max_chunks_per_reference_doc)}
    train_chunks = {line.split(" ", 1)[1] for line in trained_on}
    assert trained_on and not held_chunks & train_chunks
    assert {r["id"] for r in rows if r["split"] == "train"}.isdisjoint(r["id"] for r in held)


@pytest.fixture(scope="module")
def real_input(real_sample) -> Path:
    """A slice of the real shared data shaped like dedup output (80 pages per WARC, 8 books, 40 stdlib files)."""
    return real_sample("tinyfoundry_filter_real_v2", books=8, code_files=40)


@pytest.mark.slow
@pytest.mark.needs_shared_data
def test_real_data_classifier_and_determinism(real_input, shared_data, tmp_path):
    """Real pages of six sites, the default reference corpus (the shared Gutenberg books): the classifier is
    validated, keeps nearly all pages that passed the heuristics, ranks the pages the heuristics rejected below
    those they kept, and two runs give byte-identical outputs and models."""
    from sklearn.metrics import roc_auc_score

    from tasks.filter import run_filter

    cfg = FilterConfig(executor={"kind": "local", "tasks": 2, "workers": 2})
    inputs = {"docs": real_input, "reference": shared_data / "books"}
    stats = run_filter(cfg, inputs, tmp_path / "a")
    c = stats["classifier"]
    assert c["validated"] == 1 and c["reference_docs"] == 32 and c["f1"] >= 0.85 and c["roc_auc"] >= 0.9, c
    kept = {d["id"]: d for d in iter_docs(tmp_path / "a")}
    books_in = [d for d in iter_docs(real_input) if d["metadata"]["source"] == "books"]
    assert all(b["id"] in kept for b in books_in), "a clean Gutenberg book was dropped"
    web_cut = stats["cuts"]["web"]
    assert stats["kept"]["web"] / web_cut["docs"] >= 0.85, web_cut
    rejects = {d["id"]: d for d in iter_docs(tmp_path / "a", "rejects")}
    assert all(d["metadata"]["reject_reason"] for d in rejects.values())
    assert stats["docs_in"] == sum(1 for _ in iter_docs(real_input))
    # pages the heuristics rejected score below the pages they kept (out-of-fold scores: no page is scored by a
    # model that trained on it)
    heur = [d["metadata"]["quality_score"] for d in rejects.values()
            if d["metadata"]["source"] == "web" and not d["metadata"]["reject_reason"].startswith("classifier/")]
    good = [d["metadata"]["quality_score"] for d in kept.values() if d["metadata"]["source"] == "web"]
    assert roc_auc_score([1] * len(good) + [0] * len(heur), good + heur) >= 0.8

    run_filter(cfg, inputs, tmp_path / "b")
    for sub in ("docs", "rejects"):
        a, b = doc_files(tmp_path / "a", sub), doc_files(tmp_path / "b", sub)
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b)), f"{sub} differ between runs"
    for name in ("quality_model.fold0.bin", "quality_model.fold1.bin", "quality_labels.jsonl.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
