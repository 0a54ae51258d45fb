"""The fastText quality classifier: DCLM's recipe (curated text vs raw crawl) on this pipeline's own data.

Labels come from params selectors (`books`, `web:docs`, `web:rejected`, `web:random`, ...) applied to the
heuristics pass's kept and rejected documents. Documents are split train/held-out by a hash of their id
(deterministic, and no chunk of a held-out book leaks into training). Texts are lower-cased and split into
word and punctuation tokens, then cut into `chunk_words`-token chunks (books are far longer than a useful
fastText example); a document's score is the mean P(hq) of at most `max_chunks_per_doc` evenly spaced chunks.
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from tasks.config.filter import ClassifierConfig

log = logging.getLogger("tinyfoundry.filter")

POSITIVE, NEGATIVE = "hq", "lq"
MIN_TRAIN_TOKENS = 10
_TOKEN = re.compile(r"\w+|[^\w\s]")


def chunks(text: str, chunk_words: int, max_chunks: int) -> list[str]:
    """At most `max_chunks` evenly spaced chunks of `chunk_words` normalised tokens (one line each)."""
    window = chunk_words * 12  # characters: comfortably more than chunk_words tokens of prose
    if len(text) > 2 * window * max_chunks:
        # long text (a book): tokenise only max_chunks evenly spaced windows, not the whole megabyte
        starts = np.linspace(0, len(text) - window, max_chunks).astype(int)
        out = []
        for start in starts:
            piece = text[start:start + window]
            tokens = _TOKEN.findall(piece.lower())[1:chunk_words + 1]  # [1:]: the first may be a cut word
            out.append(" ".join(tokens))
        return out
    tokens = _TOKEN.findall(text.lower())
    if not tokens:
        return [""]
    n = -(-len(tokens) // chunk_words)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, max_chunks))})
    return [" ".join(tokens[i * chunk_words:(i + 1) * chunk_words]) for i in picks]


def load_model(path: str | Path):
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # silence "load_model does not return" warning
    return fasttext.load_model(str(path))


def score_texts(model, texts: list[str], chunk_words: int, max_chunks: int, label: str = POSITIVE) -> list[float]:
    """Mean P(label) over each text's chunks (one batched fastText call for all of them)."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        for c in chunks(text, chunk_words, max_chunks):
            pieces.append(c)
            owner.append(i)
    labels, probs = model.predict(pieces, k=-1)
    key = f"__label__{label}"
    p = np.array([float(dict(zip(ls, ps)).get(key, 0.0)) for ls, ps in zip(labels, probs)])
    sums = np.bincount(owner, weights=p, minlength=len(texts))
    counts = np.bincount(owner, minlength=len(texts))
    return [round(float(s / c), 6) for s, c in zip(sums, counts)]


def selector_matches(selector: str, doc: dict, rejected: bool, cfg: ClassifierConfig) -> bool:
    """`SOURCE`: kept documents of the source. For web pages, `:docs` are kept pages of `docs_domains`;
    `:other`, `:rejected` and `:random` are raw pages (any other domain) kept, dropped by the heuristics,
    or a seeded `random_fraction` of the kept ones. Documentation pages the heuristics drop are no label."""
    source, _, kind = selector.partition(":")
    meta = doc["metadata"]
    if meta.get("source") != source:
        return False
    is_docs = meta.get("domain", "") in cfg.docs_domains
    if kind == "rejected":
        return rejected and not is_docs
    if rejected:
        return False
    if kind == "docs":
        return is_docs
    if kind == "other":
        return not is_docs
    if kind == "random":
        return not is_docs and _unit(f"random:{cfg.seed}:{doc['id']}") < cfg.random_fraction
    return True


def _unit(key: str) -> float:
    """A deterministic number in [0, 1) from a string (for splits and samples)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / 16**12


def label_documents(kept: Iterable[dict], rejected: Iterable[dict],
                    cfg: ClassifierConfig) -> list[tuple[str, str, str, str]]:
    """(id, label, selector, text) for every document a selector names, sorted by id; negative wins a tie."""
    out = []
    for docs, is_rejected in ((kept, False), (rejected, True)):
        for doc in docs:
            for label, selectors in ((NEGATIVE, cfg.negative_sources), (POSITIVE, cfg.positive_sources)):
                hit = next((s for s in selectors if selector_matches(s, doc, is_rejected, cfg)), None)
                if hit:
                    out.append((doc["id"], label, hit, doc["text"]))
                    break
    return sorted(out, key=lambda r: (r[0], r[1]))


def split(labelled: list[tuple[str, str, str, str]], cfg: ClassifierConfig):
    heldout = [r for r in labelled if _unit(f"split:{cfg.seed}:{r[0]}") < cfg.heldout_fraction]
    train = [r for r in labelled if _unit(f"split:{cfg.seed}:{r[0]}") >= cfg.heldout_fraction]
    return train, heldout


def training_lines(train: list[tuple[str, str, str, str]], cfg: ClassifierConfig) -> tuple[list[str], dict[str, int]]:
    """Labelled chunk lines. Each class is capped (and balanced against the other); within a class the
    selectors take turns, so 30 books are not drowned by 1,500 documentation pages."""
    rng = random.Random(cfg.seed)
    groups: dict[str, dict[str, list[str]]] = {POSITIVE: {}, NEGATIVE: {}}
    for _, label, selector, text in train:
        groups[label].setdefault(selector, []).extend(  # a near-empty line can make fastText 0.9.2 hit NaN
            f"__label__{label} {c}" for c in chunks(text, cfg.chunk_words, cfg.max_chunks_per_doc)
            if c.count(" ") >= MIN_TRAIN_TOKENS - 1)
    sizes = {label: sum(map(len, g.values())) for label, g in groups.items()}
    cap = min(cfg.max_examples_per_class, *sizes.values()) if cfg.balance else cfg.max_examples_per_class
    picked: dict[str, list[str]] = {}
    for label, by_selector in groups.items():
        pools = [rng.sample(v, len(v)) for _, v in sorted(by_selector.items())]
        out: list[str] = []
        while len(out) < min(cap, sizes[label]):  # round-robin over selectors until the cap
            for pool in pools:
                if pool and len(out) < cap:
                    out.append(pool.pop())
        picked[label] = out
    lines = picked[POSITIVE] + picked[NEGATIVE]
    rng.shuffle(lines)  # fastText reads its input in order each epoch
    return lines, {label: len(v) for label, v in picked.items()}


def train(train_rows: list[tuple[str, str, str, str]], cfg: ClassifierConfig, model_path: Path) -> dict:
    """Train with thread=1, a fixed seed and in a fresh process (fastText is reproducible only so); save the model."""
    from .fasttext_fit import fit_in_fresh_process

    lines, counts = training_lines(train_rows, cfg)
    if min(counts.values()) == 0:
        docs = {label: sum(r[1] == label for r in train_rows) for label in (POSITIVE, NEGATIVE)}
        raise ValueError(f"classifier training needs both classes, got training documents {docs}: check "
                         "filter.classifier.positive_sources / negative_sources against the input")
    data = model_path.with_suffix(".train.txt")
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("training the fastText quality classifier on %d chunks (%s)", len(lines), counts)
    # fastText 0.9.2 raises "Encountered NaN" when a line's words all fall under minCount, or when a high lr
    # diverges: retry (deterministically, logged) with minCount=1, then with smaller learning rates
    attempts = [(cfg.lr, cfg.min_count), (cfg.lr, 1), (cfg.lr / 2, 1), (cfg.lr / 4, 1)]
    for lr, min_count in attempts:
        try:
            fit_in_fresh_process(str(data), str(model_path), epoch=cfg.epoch, lr=lr, wordNgrams=cfg.word_ngrams,
                                 dim=cfg.dim, minCount=min_count, bucket=cfg.bucket, seed=cfg.seed)
            break
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise
            log.warning("fastText training hit NaN at lr=%g, minCount=%d; retrying", lr, min_count)
    else:
        raise RuntimeError(f"fastText training hit NaN down to lr={lr:g}: lower filter.classifier.lr")
    data.unlink()
    return {**{f"train_chunks_{k}": v for k, v in counts.items()}, "train_lr": lr, "train_min_count": min_count}


def evaluate(model, heldout: list[tuple[str, str, str, str]], cfg: ClassifierConfig, label: str = POSITIVE) -> dict:
    """Document-level precision/recall/F1 (hq = positive, score ≥ 0.5) and ROC-AUC on the held-out split."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    y = np.array([r[1] == POSITIVE for r in heldout], dtype=bool)
    if len(heldout) == 0 or y.all() or not y.any():
        log.warning("held-out split has %d documents and not both classes: no classifier metrics", len(heldout))
        return {"heldout_docs": len(heldout)}
    s = np.array(score_texts(model, [r[3] for r in heldout], cfg.chunk_words, cfg.max_chunks_per_doc, label))
    p, r, f1, _ = precision_recall_fscore_support(y, s >= 0.5, labels=[True, False], zero_division=0)
    return {"precision": round(float(p[0]), 4), "recall": round(float(r[0]), 4), "f1": round(float(f1[0]), 4),
            "f1_lq": round(float(f1[1]), 4), "roc_auc": round(float(roc_auc_score(y, s)), 4),
            "heldout_docs": len(heldout), "heldout_hq": int(y.sum()), "heldout_lq": int((~y).sum()),
            "heldout_mean_score": {sel.replace(":", "_"): round(float(np.mean([x for x, r in zip(s, heldout) if r[2] == sel])), 4)
                                   for sel in sorted({r[2] for r in heldout})}}


class QualityScorer(BaseFilter):
    """Writes `metadata.quality_score` (mean P(hq) over chunks) and drops documents under their source's threshold."""

    name = "🎯 Quality score"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, model_path: str, chunk_words: int, max_chunks: int, thresholds: dict[str, float],
                 label: str = POSITIVE, exclusion_writer=None, batch_size: int = 64):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.model_path, self.chunk_words, self.max_chunks = model_path, chunk_words, max_chunks
        self.thresholds, self.label = thresholds, label
        self._model = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        if self._model is None:
            self._model = load_model(self.model_path)
        scores = score_texts(self._model, [d.text for d in batch], self.chunk_words, self.max_chunks, self.label)
        out = []
        for doc, score in zip(batch, scores):
            doc.metadata["quality_score"] = score
            threshold = self.thresholds.get(doc.metadata.get("source"), 0.0)
            out.append(True if score >= threshold else (False, "classifier/below_threshold"))
            if score < threshold:
                doc.metadata["quality_threshold"] = threshold
        return out
