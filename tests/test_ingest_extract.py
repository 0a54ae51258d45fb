"""HTML → main-text extractors (tasks/ingest/extract.py): what each keeps and drops, the guard and the fallback,
the config key, and quality on the shared human-labelled extraction benchmark."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tasks.config import ConfigError, parse_config, read_yaml
from tasks.config.executor import ExecutorConfig
from tasks.config.ingest import WebIngestConfig
from tasks.docs import iter_docs
from tasks.ingest import logs_path, run_ingest
from tasks.ingest.extract import EXTRACTORS, ResiliparseExtractor, TrafilaturaExtractor, make_extractor

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ["The council voted on Tuesday to rebuild the old stone bridge over the river, ending a debate that had "
           "divided the town for more than a decade and delayed repairs to the only road into the valley.",
           "Engineers said the work would take two summers, and that traffic would be carried on a temporary "
           "crossing upstream while the foundations were replaced and the arches were strengthened.",
           "Shop owners on the high street welcomed the decision, saying that the closures of the last years had "
           "cost them visitors, while farmers asked for the temporary crossing to carry heavy vehicles."]


def news_page(article_class: str = "article-body") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<html><head><title>Bridge</title></head><body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. Accept all cookies.</div>
<header><a href="/">Daily Valley News</a></header>
<nav><a href="/">Home</a> <a href="/news">News</a> <a href="/sport">Sport</a></nav>
<main><article>
<h1>Council votes to rebuild the stone bridge</h1>
<div class="byline">By Jane Smith, Valley Correspondent</div><time>12 May 2024</time>
<figure><img src="b.jpg" alt="The bridge"><figcaption>The bridge in winter. Photo: Valley Archive</figcaption></figure>
<div class="{article_class}">{paragraphs}</div>
<div class="share-tools">Share this story on Facebook Twitter Email</div>
<div class="related-stories"><h3>Related stories</h3><ul><li><a href="/a">Flood warning lifted for the valley
road after heavy rain last week</a></li><li><a href="/b">New bus timetable starts next month for villages</a></li>
</ul></div>
</article></main>
<footer>Copyright 2024 Daily Valley News. All rights reserved.</footer></body></html>"""


def contents_page() -> str:
    """A Sphinx-style table of contents: all links, which resiliparse's main-content heuristics drop."""
    items = "".join(f'<li class="toctree-l1"><a class="reference internal" href="m{i}.html">Module {i}: reading and '
                    f'writing files of kind {i}</a></li>' for i in range(40))
    return (f'<html><head><title>Contents</title></head><body><div class="document"><div class="body" role="main">'
            f'<section><h1>Library contents</h1><div class="toctree-wrapper"><ul>{items}</ul></div></section>'
            f'</div></div></body></html>')


def test_resiliparse_keeps_the_article_and_drops_boilerplate():
    text, used = ResiliparseExtractor()(news_page())
    assert used == "resiliparse"
    for paragraph in ARTICLE:
        assert paragraph in text
    for boilerplate in ("cookies", "Daily Valley News", "Sport", "Council votes", "Jane Smith", "Photo: Valley",
                        "Share this story", "Related stories", "Flood warning", "Copyright"):
        assert boilerplate not in text, boilerplate


def test_skip_rules_that_match_the_article_wrapper_are_overruled():
    """`[class*=author]` drops by-line boxes; a wrapper named e.g. `author-page` must not take the article with it."""
    from resiliparse.extract.html2text import extract_plain_text

    page = news_page(article_class="author-page")
    unguarded, _ = ResiliparseExtractor(guard=0)(page)
    guarded, _ = ResiliparseExtractor()(page)
    assert ARTICLE[0] not in unguarded  # the rule alone would lose the article ...
    assert all(p in guarded for p in ARTICLE)  # ... the guard keeps it
    assert guarded == extract_plain_text(page, main_content=True, comments=False, alt_texts=False, post_meta=False)


def test_fallback_extracts_pages_resiliparse_misses():
    page = contents_page()
    alone, _ = ResiliparseExtractor()(page)
    text, used = make_extractor("resiliparse+trafilatura")(page)
    assert "Module 7" not in alone
    assert used == "trafilatura" and "Module 7: reading and writing files of kind 7" in text
    assert (text, used) == TrafilaturaExtractor()(page)
    # a normal article stays with resiliparse
    assert make_extractor("resiliparse+trafilatura")(news_page())[1] == "resiliparse"


def test_every_extractor_is_selectable_and_unknown_names_fail_at_load():
    for name in EXTRACTORS:
        assert WebIngestConfig(extractor=name).extractor == name
        text, _ = make_extractor(name)(news_page())
        assert ARTICLE[1] in text
    params = read_yaml(ROOT / "params.yaml")
    params["ingest"]["web"]["extractor"] = "readability"
    with pytest.raises(ConfigError, match="ingest.web.extractor"):
        parse_config(params)
    params["ingest"]["web"]["extractor"] = "resiliparse"
    params["ingest"]["web"]["fallback_below"] = 1.5
    with pytest.raises(ConfigError, match="ingest.web.fallback_below"):
        parse_config(params)


def test_stage_records_the_extractor_and_counts_fallbacks(tmp_path):
    from test_ingest import warc_bytes

    warc = tmp_path / "raw" / "pages.warc.gz"
    warc.parent.mkdir()
    warc.write_bytes(b"".join(warc_bytes([
        ("response", "https://valley.example/bridge", 200, "text/html", news_page().encode()),
        ("response", "https://docs.example/contents", 200, "text/html", contents_page().encode()),
    ])))
    cfg = WebIngestConfig(executor=ExecutorConfig(tasks=1, workers=1), min_chars=0, languages=[])
    run_ingest(cfg, {"raw": warc.parent}, tmp_path / "out")
    used = {d["metadata"]["url"]: d["metadata"]["extractor"] for d in iter_docs(tmp_path / "out", "docs")}
    assert used == {"https://valley.example/bridge": "resiliparse", "https://docs.example/contents": "trafilatura"}
    stats = json.loads((logs_path(tmp_path / "out") / "stats.json").read_text())
    counts = next(step["stats"] for step in stats if "HTML → main text" in step["name"])
    assert counts["extracted_by_resiliparse"] == 1 and counts["extracted_by_trafilatura"] == 1


@pytest.mark.needs_shared_data
def test_default_extractor_f1_on_the_shared_extraction_benchmark():
    """The benchmark's own metric on its 120 human-labelled pages, overall and on the held-out half."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from extraction import SHARED, load_pages, metrics, page_scores

    if not (SHARED / "extraction" / "ground-truth.json").exists():
        pytest.skip(f"needs the shared extraction benchmark at {SHARED / 'extraction'}; not found")
    truth, pages = load_pages(SHARED / "extraction")
    extract = make_extractor(WebIngestConfig().extractor)
    scores = [page_scores(truth[i]["articleBody"], extract(pages[i])[0]) for i in sorted(truth)]
    assert metrics(scores)["f1"] >= 0.95
    assert metrics(scores[1::2])["f1"] >= 0.95  # held-out half: no rule was chosen on these pages
