"""HTML → main text for web ingest, selected with `ingest.web.extractor` (docs/ingest.md, "Extractors").

| name | what | F1 (benchmarks/extraction.py), CPU vs trafilatura |
|---|---|---|
| `resiliparse+trafilatura` (default) | `resiliparse`; trafilatura where resiliparse kept ~nothing | 0.953, 1/5 |
| `resiliparse` | Resiliparse main-content extraction (Lexbor parser, C++) with boilerplate skip rules | 0.953, 1/7 |
| `trafilatura` | trafilatura `extract` (`favour_precision`, `no_fallback`), the extractor datatrove uses | 0.963, 1 |

Each extractor is a small picklable callable `html -> (text, name of the extractor that produced it)`;
`HtmlToText` (web.py) runs it inside datatrove's timeout sandbox.
"""
from __future__ import annotations

import re

WORD = re.compile(r"\w+")

# Elements resiliparse's main-content heuristics leave in that are not article text: the page title `h1` (human
# article bodies leave it out; trafilatura often does), figures and captions, ARIA landmarks that are not the
# main content, cookie and consent banners, related-story / share / newsletter boxes, by-lines and dates. The
# categories follow trafilatura's discard rules (xpaths.py), but as few, whole-box CSS selectors: trafilatura's
# full list, applied to the whole page, also matched wrappers of the article (F1 0.80); ad-box rules
# (`[class*=advert]`, `promo`...) gained nothing and matched wrappers. Chosen on the benchmark's tuning half.
BLOCK = ":is(div,section,aside,p,span,ul,ol)"
SKIP_SELECTORS = (
    "h1", "figure", "figcaption", "[class*=caption]", "time", "button", "select", "textarea", "label",
    "[role=complementary]", "[role=contentinfo]", "[role=navigation]", "[role=banner]", "[role=dialog]",
    "[role=alertdialog]", "[aria-hidden=true]", "[hidden]",
    *(BLOCK + s for s in (
        "[id*=cookie i]", "[class*=cookie i]", "[class*=consent i]",
        "[class*=related i]", "[id*=related i]", "[class*=recommend i]", "[class*=most-popular i]",
        "[class*=more-stories i]", "[class*=share i]", "[class*=social i]", "[class*=newsletter i]",
        "[class*=subscribe i]", "[class*=byline i]", "[class*=author i]", "[class*=tags i]", "[class*=timestamp i]",
    )),
)


def word_count(text: str) -> int:
    return len(WORD.findall(text))


class TrafilaturaExtractor:
    """trafilatura.extract as datatrove's Trafilatura step calls it (no comments, no cross-document dedup)."""

    name = "trafilatura"

    def __init__(self, favour_precision: bool = True, no_fallback: bool = False):
        self.favour_precision = favour_precision
        self.no_fallback = no_fallback

    def __call__(self, html: str) -> tuple[str, str]:
        from trafilatura import extract

        text = extract(html, favor_precision=self.favour_precision, no_fallback=self.no_fallback,
                       include_comments=False, deduplicate=False)
        return text or "", self.name


class ResiliparseExtractor:
    """Resiliparse main-content extraction with `SKIP_SELECTORS`, guarded on both sides.

    - The skip rules may not remove most of the main content: when they leave under `guard` of the words
      extracted without them (a rule matched a wrapper of the article), the unfiltered main content is used.
    - `fallback`: when the main content has fewer words than `fallback_below` × the page's visible text (the
      heuristics missed the article, e.g. some Sphinx pages come out empty), `fallback(html)` extracts the page.
    """

    name = "resiliparse"

    def __init__(self, fallback: TrafilaturaExtractor | None = None, fallback_below: float = 0.1, guard: float = 0.5):
        self.fallback = fallback
        self.fallback_below = fallback_below
        self.guard = guard

    def __call__(self, html: str) -> tuple[str, str]:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        tree = HTMLTree.parse(html)
        options = dict(main_content=True, comments=False, alt_texts=False, post_meta=False)
        text = extract_plain_text(tree, skip_elements=list(SKIP_SELECTORS), **options)
        words = word_count(text)
        if self.guard:
            unfiltered = extract_plain_text(tree, **options)
            if words < self.guard * word_count(unfiltered):
                text, words = unfiltered, word_count(unfiltered)
        if self.fallback is not None and words < self.fallback_below * word_count(
                extract_plain_text(tree, main_content=False, alt_texts=False)):
            return self.fallback(html)
        return text, self.name


EXTRACTORS = ("resiliparse+trafilatura", "resiliparse", "trafilatura")


def make_extractor(name: str, favour_precision: bool = True, no_fallback: bool = False, fallback_below: float = 0.1):
    """The extractor `ingest.web.extractor` names (one of EXTRACTORS); trafilatura options apply where it runs."""
    trafilatura = TrafilaturaExtractor(favour_precision, no_fallback)
    if name == "trafilatura":
        return trafilatura
    if name == "resiliparse":
        return ResiliparseExtractor()
    if name == "resiliparse+trafilatura":
        return ResiliparseExtractor(fallback=trafilatura, fallback_below=fallback_below)
    raise ValueError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
