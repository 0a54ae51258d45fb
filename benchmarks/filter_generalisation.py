"""Does the quality classifier hold on data it was not tuned on? (issue 13; run by `benchmarks/filter.py --generalisation`)

The shared data is split in two, and every choice of the classifier's recipe (reference corpus, cuts, folds)
was made looking at the TUNE part only; the HELD-OUT part was run once, for the figures.
- web WARCs: tune = the Common Crawl excerpt + the dolma wget crawl + the Python docs site;
  held-out = the Internet Archive 2008 crawl + the PostgreSQL docs site + the Debian reference.
- extraction benchmark (120 news/blog pages with human-extracted bodies): tune = the first 60 ids in sorted
  order, held-out = the last 60.

For each part, the filter stage runs with params.yaml's settings on that part's web pages (domains named
nowhere in the config) and the default reference corpus (fetched by the fetch stage from fetch.reference).
Reported per part: pages that passed the heuristics and the share the classifier kept (the "done when"
figure), its held-out validation, and with the models trained on the TUNE part's web pages: the share of
extraction bodies at or above the realised web cut, and the ROC-AUC of bodies vs the web pages the
heuristics rejected. Baseline: the previous recipe as it behaves on domains it does not list (books vs web
pages, one model, absolute cut 0.5, no validation gate, no drop guard).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

TUNE_WARCS = ("CC-MAIN-20200808165417-20200808195417-00395.sample.warc.gz", "dolma-sample-0000.warc.gz",
              "python-docs-3.11.warc.gz")
HELDOUT_WARCS = ("IAH-20080430204825-00000-blackbook.warc.gz", "postgresql-docs-15.warc.gz",
                 "debian-reference.warc.gz")
PROJECT = Path(__file__).resolve().parents[1]


def web_pages(shared: Path, cache: Path, warc: str) -> list[dict]:
    """A WARC's pages shaped like dedup output (trafilatura, as tasks.filter.sample), cached per WARC."""
    from tasks.docs import iter_docs, write_docs
    from tasks.filter.sample import web_docs

    folder = cache / warc.removesuffix(".warc.gz")
    if not (folder / "docs.jsonl.gz").exists():
        write_docs(folder / "docs.jsonl.gz", web_docs(shared / "web" / warc))
    return list(iter_docs(folder))


def bodies(shared: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], set[str]]:
    """(tune, held-out) extraction bodies as (id, text), and the ids whose body is not English (lid.176)."""
    from datatrove.data import Document

    from tasks.filter.heuristics import OfflineLanguageFilter

    truth = json.loads((shared / "extraction" / "ground-truth.json").read_text(encoding="utf-8"))
    rows = [(f"extraction/{k}", v["articleBody"]) for k, v in sorted(truth.items())]
    lid = OfflineLanguageFilter(["en"], 0.65)
    other = {i for i, t in rows if lid.filter(Document(text=t, id=i)) is not True}
    half = len(rows) // 2
    return rows[:half], rows[half:], other


def run_part(pages: list[dict], reference: Path, out: Path, cfg) -> dict:
    from tasks.docs import iter_docs, write_docs
    from tasks.filter import run_filter
    from tasks.filter.classifier import FoldModels

    write_docs(out / "in" / "docs" / "web.jsonl.gz", pages)
    stats = run_filter(cfg, {"docs": out / "in", "reference": reference}, out / "out")
    c = cfg.classifier
    paths = sorted(str(p) for p in (out / "out").glob("quality_model*.bin"))
    rejects = [d for d in iter_docs(out / "out", "rejects") if d["metadata"]["source"] == "web"
               and not d["metadata"]["reject_reason"].startswith("classifier/")]
    return {"stats": stats, "models": FoldModels(paths, c.seed, c.chunk_words, c.max_chunks_per_doc, c.positive_label),
            "rejects": rejects}


def generalisation(shared: Path, work: Path | None = None, tune_only: bool = False) -> None:
    import logging

    from sklearn.metrics import roc_auc_score

    from tasks.config import load_config

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from tasks.config.filter import SourceFilterConfig
    from tasks.fetch import run_fetch

    work = Path(work or tempfile.mkdtemp(prefix="filter_generalisation_"))
    params = load_config(PROJECT / "params.yaml")
    reference = work / "reference"
    if not reference.is_dir():
        run_fetch(params.fetch.reference.model_copy(update={"uris": [
            str((PROJECT / u).resolve()) if not u.startswith(("/", "http")) else u
            for u in params.fetch.reference.uris]}), {}, reference)
    ours = params.filter
    c = ours.classifier
    old = ours.model_copy(update={
        "classifier": c.model_copy(update={"folds": 1, "max_chunks_per_reference_doc": c.max_chunks_per_doc,
                                           "min_f1": 0.0, "min_heldout_per_class": 1, "max_drop_fraction": 1.0}),
        "web": SourceFilterConfig(**{**ours.web.model_dump(), "min_quality_score": 0.5, "keep_top_fraction": None})})
    tune_bodies, held_bodies, not_english = bodies(shared)

    runs = {}
    for part, warcs in (("tune", TUNE_WARCS), ("held-out", HELDOUT_WARCS))[:1 if tune_only else 2]:
        pages = [p for w in warcs for p in web_pages(shared, work / "pages", w)]
        runs[part] = run_part(pages, reference, work / part, ours)
        runs[part]["old"] = run_part(pages, reference, work / f"{part}-old", old)["stats"]
        runs[part]["pages"] = len(pages)

    print(f"\nquality classifier on web pages from domains named nowhere in the config (reference: "
          f"{', '.join(params.fetch.reference.uris)})\n")
    print(f"{'web pages (part)':<18}{'pages':>6}{'passed heur.':>13}{'kept (ours)':>13}{'kept (old)':>12}"
          f"{'ours/old':>9}{'cut':>9}{'F1':>7}{'AUC':>7}{'validated':>10}")
    for part, r in runs.items():
        s, o = r["stats"], r["old"]
        passed = s["cuts"]["web"]["docs"]
        k_new, k_old = s["kept"].get("web", 0) / passed, o["kept"].get("web", 0) / passed
        cl = s["classifier"]
        print(f"{part:<18}{r['pages']:>6}{passed:>13}{k_new:>13.1%}{k_old:>12.1%}{k_new / max(k_old, 1e-9):>8.1f}x"
              f"{s['thresholds']['web']:>9.2g}{cl.get('f1', float('nan')):>7.3f}{cl.get('roc_auc', float('nan')):>7.3f}"
              f"{'yes' if cl['validated'] else 'no':>10}")

    print("\nextraction-benchmark bodies (news/blogs) vs web pages the heuristics rejected, scored by the models "
          "trained on the TUNE part's pages; cut = the tune run's realised web cut")
    print(f"{'bodies':<22}{'n':>4}{'kept at cut':>13}{'kept >= 0.5':>13}{'  rejects scored':<34}{'n':>5}{'ROC-AUC':>9}")
    models, cut = runs["tune"]["models"], runs["tune"]["stats"]["thresholds"]["web"]
    for part, rows in (("tune", tune_bodies), ("held-out", held_bodies))[:len(runs)]:
        rej = runs[part]["rejects"]
        r_scores = models.score([d["id"] for d in rej], [d["text"] for d in rej])
        for which, sel in (("all", rows), ("English", [r for r in rows if r[0] not in not_english])):
            b = np.array(models.score([i for i, _ in sel], [t for _, t in sel]))
            auc = roc_auc_score([1] * len(b) + [0] * len(r_scores), [*b, *r_scores])
            seen = "out-of-fold" if part == "tune" else "never seen"
            print(f"{part + ' ' + which:<22}{len(b):>4}{np.mean(b >= cut):>13.1%}{np.mean(b >= 0.5):>13.1%}"
                  f"  {part + ' WARCs (' + seen + ')':<32}{len(r_scores):>5}{auc:>9.3f}")
    print(f"\nwork folder: {work}")
