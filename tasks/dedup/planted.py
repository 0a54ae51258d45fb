"""Planted near-duplicates for measuring dedup quality (used by tests/test_dedup*.py and benchmarks/dedup.py).

Real passages (Gutenberg books from ../shared/data) get one twin each, mutated by word substitutions,
insertions/deletions, line shuffles or added boilerplate until the twin's exact word-5-gram Jaccard
similarity with its original hits a drawn target (bisection on the mutation rate). The exact Jaccard
here uses its own plain-Python tokeniser, independent of the hashing in tasks/dedup/minhash.py.
"""
from __future__ import annotations

import gzip
import random
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.ingest.books import parse_book

_SPLIT = re.compile(r"[^a-z0-9\u0080-\U0010ffff]+")
KINDS = ("substitute", "insdel", "shuffle", "boilerplate")
_BOILER = ("home about contact privacy policy terms of use cookie settings accept all cookies subscribe to our "
           "newsletter share on facebook twitter email print this page related articles sign in register "
           "advertisement copyright all rights reserved menu search skip to main content read more next "
           "previous page top back comments powered by sitemap careers help faq").split()


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = [w for w in _SPLIT.split(text.lower()) if w]
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def read_book(path: Path) -> str:
    """A shared-data Gutenberg book's text, decoded and stripped exactly as the ingest stage does."""
    parsed = parse_book(gzip.open(path, "rb").read())
    if isinstance(parsed, str):
        raise ValueError(f"{path}: {parsed}")
    return parsed[1]


def book_passages(books_dir: Path, count: int, min_words: int = 120, max_words: int = 400,
                  seed: int = 0) -> list[str]:
    """`count` passages of whole paragraphs, drawn round-robin from the books (deterministic)."""
    rng = random.Random(seed)
    per_book = []
    for path in sorted(Path(books_dir).glob("*.txt.gz")):
        paras = [p.strip() for p in re.split(r"\n\s*\n", read_book(path)) if len(p.split()) >= 5]
        passages, cur, size, want = [], [], 0, rng.randint(min_words, max_words)
        for p in paras:
            cur.append(p)
            size += len(p.split())
            if size >= want:
                passages.append("\n\n".join(cur))
                cur, size, want = [], 0, rng.randint(min_words, max_words)
        per_book.append(passages)
    out: list[str] = []
    i = 0
    while len(out) < count and any(i < len(b) for b in per_book):
        out.extend(b[i] for b in per_book if i < len(b))
        i += 1
    return out[:count]


def mutate(text: str, kind: str, rate: float, seed: int) -> str:
    """One mutation at strength `rate` in [0, 1]; a fixed seed makes a higher rate a superset of edits."""
    rng = random.Random(seed)
    if kind == "shuffle":
        lines = re.split(r"(?<=[.!?;:])\s+|\n", text)
        picked = [i for i in range(len(lines)) if rng.random() < rate]
        moved = [lines[i] for i in picked]
        rng.shuffle(moved)
        for i, line in zip(picked, moved):
            lines[i] = line
        return "\n".join(lines)
    words = text.split(" ")
    if kind == "boilerplate":
        extra = [rng.choice(_BOILER) for _ in range(int(rate * 2 * len(words)))]
        cut = len(extra) // 2
        return " ".join(extra[:cut]) + "\n" + text + "\n" + " ".join(extra[cut:])
    vocab = [w for w in words if w.isalpha()] or ["word"]
    out = []
    for w in words:
        r, choice = rng.random(), rng.choice(vocab)
        hit = r < rate
        if kind == "substitute":
            out.append(choice if hit else w)
        elif kind == "insdel":
            if hit and r < rate / 2:
                continue  # deletion
            out.append(w)
            if hit:
                out.append(choice)  # insertion
        else:
            raise ValueError(f"unknown mutation kind {kind!r}; kinds are {KINDS}")
    return " ".join(out)


@dataclass(frozen=True)
class Pair:
    original: int
    twin: int
    kind: str
    target: float
    jaccard: float


def plant(originals: list[str], lo: float = 0.3, hi: float = 0.95, seed: int = 0,
          steps: int = 14) -> tuple[list[str], list[Pair]]:
    """Return originals + one twin each (appended in order) and the pairs with their exact Jaccard."""
    rng = random.Random(seed)
    texts, pairs = list(originals), []
    for i, text in enumerate(originals):
        kind, target, mseed = KINDS[i % len(KINDS)], rng.uniform(lo, hi), rng.randrange(1 << 30)
        a, b = 0.0, 1.0
        best, base = (2.0, text, 1.0), shingles(text)
        for _ in range(steps):
            rate = (a + b) / 2
            twin = mutate(text, kind, rate, mseed)
            other = shingles(twin)
            j = len(base & other) / len(base | other) if base or other else 1.0
            if abs(j - target) < best[0]:
                best = (abs(j - target), twin, j)
            a, b = (rate, b) if j > target else (a, rate)
        pairs.append(Pair(i, len(texts), kind, round(target, 4), best[2]))
        texts.append(best[1])
    return texts, pairs


def score(texts: list[str], pairs: list[Pair], head: list[int], pos: float = 0.85, neg: float = 0.5) -> dict:
    """Quality of a clustering given `head[i]` (the document each one was kept as or is a duplicate of).

    recall: planted pairs with Jaccard ≥ pos that ended in one cluster. precision: of all (removed,
    kept) pairs the method produced, the share whose exact Jaccard is above neg. fpr: planted pairs with
    Jaccard ≤ neg that ended in one cluster, over all such pairs.
    """
    positives = [p for p in pairs if p.jaccard >= pos]
    negatives = [p for p in pairs if p.jaccard <= neg]
    found = sum(head[p.original] == head[p.twin] for p in positives)
    false_planted = sum(head[p.original] == head[p.twin] for p in negatives)
    flagged = [(i, h) for i, h in enumerate(head) if h != i]
    bad = sum(jaccard(texts[i], texts[h]) <= neg for i, h in flagged)
    return {
        "positives": len(positives), "negatives": len(negatives), "flagged": len(flagged),
        "found": found, "false_planted": false_planted, "bad_flagged": bad,
        "recall": found / len(positives) if positives else float("nan"),
        "precision": 1 - bad / len(flagged) if flagged else 1.0,
        "fpr": false_planted / len(negatives) if negatives else 0.0,
    }
