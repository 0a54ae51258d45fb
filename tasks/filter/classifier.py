"""The fastText quality classifier: DCLM's recipe (a reference corpus of good text vs a random web sample).

Positives are the documents of a reference corpus of known-good human-written text (`fetch.reference`);
negatives are a seeded random sample of the web source itself. Nothing depends on the user's domains:
the classifier learns how far a page is from the reference, measured against the crawl's typical page.
Documents are split train/held-out by a hash of their id (deterministic; no chunk of a held-out document is
trained on). Texts are lower-cased and split into word and punctuation tokens, then cut into
`chunk_words`-token chunks; a document's score is the mean P(hq) of at most `max_chunks_per_doc` evenly
spaced chunks. The held-out set validates the model before it may drop anything (`validation_verdict`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from tasks.config.filter import ClassifierConfig

log = logging.getLogger("tinyfoundry.filter")

POSITIVE, NEGATIVE = "hq", "lq"
MIN_TRAIN_TOKENS = 10
_TOKEN = re.compile(r"\w+|[^\w\s]")


class Labelled(NamedTuple):
    id: str
    label: str
    """POSITIVE (a reference document) or NEGATIVE (a sampled document of the negative source)."""
    text: str


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


def _unit(key: str) -> float:
    """A deterministic number in [0, 1) from a string (for splits and samples)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / 16**12


def fold_of(doc_id: str, folds: int, seed: int) -> int:
    """A document's cross-fitting fold: the model of fold k never trained on the documents of fold k."""
    return min(int(_unit(f"fold:{seed}:{doc_id}") * folds), folds - 1)


class FoldModels:
    """The classifier: one fastText model per cross-fitting fold (or one given model). A document is scored by
    its fold's model, so no page that was a training negative is scored by a model that saw it. Loads lazily
    (datatrove pickles the steps that hold it)."""

    def __init__(self, paths: list[str], seed: int, chunk_words: int, max_chunks: int, label: str = POSITIVE):
        self.paths, self.seed, self.chunk_words, self.max_chunks, self.label = paths, seed, chunk_words, max_chunks, label
        self._models = None

    def __getstate__(self):
        return {**self.__dict__, "_models": None}

    def score(self, ids: list[str], texts: list[str]) -> list[float]:
        if self._models is None:
            self._models = [load_model(p) for p in self.paths]
        folds = [fold_of(str(i), len(self.paths), self.seed) for i in ids]
        out = [0.0] * len(texts)
        for k, model in enumerate(self._models):
            picked = [j for j, f in enumerate(folds) if f == k]
            if picked:
                scores = score_texts(model, [texts[j] for j in picked], self.chunk_words, self.max_chunks, self.label)
                for j, score in zip(picked, scores):
                    out[j] = score
        return out


def reference_documents(folder: Path, text_key: str = "text", skipped: dict | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of every document of a fetched reference corpus: `.txt[.gz]` files are one document each (a
    Project Gutenberg header/footer is cut, as the books ingest does), `.jsonl[.gz]` lines one each (`text_key`).
    Unusable files and lines are counted in `skipped` by reason, never silently lost."""
    from tasks.ingest.books import parse_book

    skipped = {} if skipped is None else skipped

    def skip(reason: str, where: Path) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("reference corpus: %s skipped (%s)", where, reason)

    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        name = path.name.removesuffix(".gz")
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            if name.endswith(".txt"):
                with opener(path, "rb") as f:
                    raw = f.read()
                if b"*** START OF" in raw[:100000]:
                    parsed = parse_book(raw)
                    if isinstance(parsed, str):
                        skip(f"gutenberg_{parsed}", path)
                        continue
                    text = parsed[1]
                else:
                    text = raw.decode("utf-8", errors="replace")
                if text.strip():
                    yield f"reference/{rel}", text.strip()
                else:
                    skip("empty_text", path)
            elif name.endswith(".jsonl"):
                with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                    for i, line in enumerate(f):
                        if not line.strip():
                            continue
                        try:
                            text = json.loads(line).get(text_key)
                        except (json.JSONDecodeError, AttributeError):
                            skip("malformed_json", path)
                            continue
                        if isinstance(text, str) and text.strip():
                            yield f"reference/{rel}#{i}", text.strip()
                        else:
                            skip(f"no_{text_key}", path)
            else:
                skip("unknown_format", path)
        except (OSError, EOFError) as e:  # a damaged gzip file: keep what was read, count it
            skip(f"damaged_file ({type(e).__name__})", path)


def label_documents(reference: Iterable[tuple[str, str]], kept: Iterable[dict], rejected: Iterable[dict],
                    cfg: ClassifierConfig) -> list[Labelled]:
    """Positives: the reference documents. Negatives: a seeded `negative_fraction` sample of the negative
    source's documents (heuristic rejects included when `negative_pool` is `all`). Sorted by id."""
    out = [Labelled(i, POSITIVE, t) for i, t in reference]
    pools = [kept, rejected] if cfg.negative_pool == "all" else [kept]
    for docs in pools:
        for doc in docs:
            if (doc["metadata"].get("source") == cfg.negative_source
                    and _unit(f"negative:{cfg.seed}:{doc['id']}") < cfg.negative_fraction):
                out.append(Labelled(str(doc["id"]), NEGATIVE, doc["text"]))
    return sorted(out, key=lambda r: (r.id, r.label))


def split(labelled: list[Labelled], cfg: ClassifierConfig) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held-out), by a hash of the id and seed: the same documents on every run, whatever the order."""
    held = [_unit(f"split:{cfg.seed}:{r.id}") < cfg.heldout_fraction for r in labelled]
    return [r for r, h in zip(labelled, held) if not h], [r for r, h in zip(labelled, held) if h]


def training_lines(train: list[Labelled], cfg: ClassifierConfig) -> tuple[list[str], dict[str, int]]:
    """Labelled chunk lines, each class capped at `max_examples_per_class` (and balanced against the other)."""
    rng = random.Random(cfg.seed)
    pools: dict[str, list[str]] = {POSITIVE: [], NEGATIVE: []}
    for row in train:
        limit = cfg.max_chunks_per_reference_doc if row.label == POSITIVE else cfg.max_chunks_per_doc
        pools[row.label].extend(  # a near-empty line can make fastText 0.9.2 hit NaN
            f"__label__{row.label} {c}" for c in chunks(row.text, cfg.chunk_words, limit)
            if c.count(" ") >= MIN_TRAIN_TOKENS - 1)
    sizes = {label: len(v) for label, v in pools.items()}
    cap = min(cfg.max_examples_per_class, *sizes.values()) if cfg.balance else cfg.max_examples_per_class
    picked = {label: rng.sample(v, min(cap, len(v))) for label, v in pools.items()}
    lines = picked[POSITIVE] + picked[NEGATIVE]
    rng.shuffle(lines)  # fastText reads its input in order each epoch
    return lines, {label: len(v) for label, v in picked.items()}


def train(train_rows: list[Labelled], cfg: ClassifierConfig, model_path: Path) -> dict:
    """Train with thread=1, a fixed seed and in a fresh process (fastText is reproducible only so); save the model."""
    from . import fasttext_fit

    lines, counts = training_lines(train_rows, cfg)
    if min(counts.values()) == 0:
        docs = {label: sum(r.label == label for r in train_rows) for label in (POSITIVE, NEGATIVE)}
        raise ValueError(f"classifier training needs both classes, got training documents {docs} (hq: the reference "
                         f"corpus, fetch.reference; lq: filter.classifier.negative_source)")
    data = model_path.with_suffix(".train.txt")
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("training the fastText quality classifier on %d chunks (%s)", len(lines), counts)
    # fastText 0.9.2 raises "Encountered NaN" when a line's words all fall under minCount, or when a high lr
    # diverges: retry (deterministically, logged) with minCount=1, then with smaller learning rates
    attempts = [(cfg.lr, cfg.min_count), (cfg.lr, 1), (cfg.lr / 2, 1), (cfg.lr / 4, 1)]
    for lr, min_count in attempts:
        try:
            fasttext_fit.fit_in_fresh_process(str(data), str(model_path), epoch=cfg.epoch, lr=lr,
                                              wordNgrams=cfg.word_ngrams, dim=cfg.dim, minCount=min_count,
                                              bucket=cfg.bucket, seed=cfg.seed)
            break
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise
            log.warning("fastText training hit NaN at lr=%g, minCount=%d; retrying", lr, min_count)
    else:
        raise RuntimeError(f"fastText training hit NaN down to lr={lr:g}: lower filter.classifier.lr")
    data.unlink()
    return {**{f"train_chunks_{k}": v for k, v in counts.items()}, "train_lr": lr, "train_min_count": min_count}


def evaluate(models: FoldModels, heldout: list[Labelled]) -> tuple[dict, list[float]]:
    """Document-level precision/recall/F1 (hq = positive, score >= 0.5) and ROC-AUC on the held-out split,
    and the held-out scores (in `heldout` order). Metrics are absent when a class has no held-out document."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    y = np.array([r.label == POSITIVE for r in heldout], dtype=bool)
    counts = {"heldout_docs": len(heldout), "heldout_hq": int(y.sum()), "heldout_lq": int((~y).sum())}
    if len(heldout) == 0:
        return counts, []
    s = np.array(models.score([r.id for r in heldout], [r.text for r in heldout]))
    if y.all() or not y.any():
        return counts, s.tolist()
    p, r, f1, _ = precision_recall_fscore_support(y, s >= 0.5, labels=[True, False], zero_division=0)
    return {"precision": round(float(p[0]), 4), "recall": round(float(r[0]), 4), "f1": round(float(f1[0]), 4),
            "f1_lq": round(float(f1[1]), 4), "roc_auc": round(float(roc_auc_score(y, s)), 4), **counts,
            "heldout_mean_score_hq": round(float(s[y].mean()), 4),
            "heldout_mean_score_lq": round(float(s[~y].mean()), 4)}, s.tolist()


def validation_verdict(metrics: dict, cfg: ClassifierConfig) -> str | None:
    """None when the classifier may drop documents; otherwise why not, in words."""
    hq, lq = metrics.get("heldout_hq", 0), metrics.get("heldout_lq", 0)
    if min(hq, lq) < cfg.min_heldout_per_class:
        return (f"its held-out set has {hq} reference and {lq} {cfg.negative_source} documents, fewer than "
                f"filter.classifier.min_heldout_per_class = {cfg.min_heldout_per_class} of each class, so it cannot "
                f"be validated (add reference documents: fetch.reference, or raise heldout_fraction)")
    if metrics["f1"] < cfg.min_f1:
        return (f"its held-out F1 is {metrics['f1']:.3f}, below filter.classifier.min_f1 = {cfg.min_f1} (it cannot "
                f"tell the reference corpus from the {cfg.negative_source} sample well enough to be trusted)")
    return None


class QualityScorer(BaseFilter):
    """Writes `metadata.quality_score` (mean P(hq) over chunks) and drops documents under their source's threshold."""

    name = "🎯 Quality score"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, models: FoldModels, thresholds: dict[str, float], exclusion_writer=None, batch_size: int = 64):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.models, self.thresholds = models, thresholds

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        scores = self.models.score([d.id for d in batch], [d.text for d in batch])
        out = []
        for doc, score in zip(batch, scores):
            doc.metadata["quality_score"] = score
            threshold = self.thresholds.get(doc.metadata.get("source"), 0.0)
            out.append(True if score >= threshold else (False, "classifier/below_threshold"))
            if score < threshold:
                doc.metadata["quality_threshold"] = threshold
        return out
