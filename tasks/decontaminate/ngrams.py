"""Word n-gram index of benchmark text and the matcher that finds it in documents.

Words are runs of Unicode letters and digits of the lower-cased text, so case, punctuation and spacing
never matter (GPT-3 and lm-eval's janitor also lower-case and drop punctuation; here an apostrophe
splits a word, "don't" is `don`, `t`, the same on both sides). Each word is mapped to its id in the benchmark's own vocabulary, so a document word the
benchmarks never use (id -1) cannot be part of a match, and n-grams are hashed from ids with numpy
(a polynomial hash over every window at once), then verified exactly against the word-id tuples, so
a hash collision can never remove text.

An index entry is a word sequence of one benchmark unit (a question, an answer, a question followed
by an answer, ...): every `ngram_words`-gram of a unit that long, or the whole unit when it is
shorter but has at least its task's `min_words` (tasks/config/decontaminate.py explains the rule).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

WORD = re.compile(r"[^\W_]+")
_PRIME = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier; numpy uint64 arithmetic wraps mod 2**64


def normal_words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """`normal_words(text)` with each word's character span in `text`."""
    low = text.lower()
    matches = list(WORD.finditer(low))
    if len(low) == len(text):  # lower() kept every offset (always for ASCII)
        return [m.group() for m in matches], [m.span() for m in matches]
    # a few characters grow when lower-cased ('İ' -> 'i̇'): map positions in `low` back to `text`
    origin = [i for i, ch in enumerate(text) for _ in ch.lower()]
    if len(origin) != len(low):
        raise ValueError("lower-casing is not per character for this text")
    return [m.group() for m in matches], [(origin[m.start()], origin[m.end() - 1] + 1) for m in matches]


@dataclass
class Entry:
    words: str
    """The normalised words, space-joined (what a reject's `matched_ngram` shows)."""
    items: set[tuple[int, int]] = field(default_factory=set)
    """(task number, item number) of every benchmark item that contains this word sequence."""


@dataclass
class Match:
    start: int
    """Position of the first word in the document's word list."""
    length: int
    entry: Entry


class NgramIndex:
    """Word sequences of benchmark units, grouped by length, looked up by hash and verified exactly."""

    def __init__(self, task_names: list[str], ngram_words: int):
        self.task_names = list(task_names)
        self.ngram_words = ngram_words
        self.vocab: dict[str, int] = {}
        self.entries: dict[tuple[int, ...], Entry] = {}
        self._tables: dict[int, np.ndarray] | None = None

    # ----------------------------------------------------------------------------------------- build

    def add_unit(self, text: str, task: int, item: int, min_words: int) -> int:
        """Index one benchmark unit; returns how many word sequences it contributed (0: too short)."""
        words = normal_words(text)
        if len(words) < min_words:
            return 0
        ids = tuple(self.vocab.setdefault(w, len(self.vocab)) for w in words)
        n = self.ngram_words
        spans = [(i, i + n) for i in range(len(ids) - n + 1)] if len(ids) >= n else [(0, len(ids))]
        for a, b in spans:
            entry = self.entries.get(ids[a:b])
            if entry is None:
                entry = self.entries[ids[a:b]] = Entry(" ".join(words[a:b]))
            entry.items.add((task, item))
        self._tables = None
        return len(spans)

    def tables(self) -> dict[int, np.ndarray]:
        """Sorted hashes of the entries, per entry length."""
        if self._tables is None:
            by_len: dict[int, list[tuple[int, ...]]] = defaultdict(list)
            for gram in self.entries:
                by_len[len(gram)].append(gram)
            self._tables = {k: np.unique(_hashes(np.array(grams, dtype=np.int64)))
                            for k, grams in sorted(by_len.items())}
        return self._tables

    # ----------------------------------------------------------------------------------------- match

    def ids_of(self, words: list[str]) -> np.ndarray:
        get = self.vocab.get
        return np.fromiter((get(w, -1) for w in words), dtype=np.int64, count=len(words))

    def find(self, words: list[str]) -> list[Match]:
        """Every window of `words` that equals an index entry, in document order (longest first at a position)."""
        tables = self.tables()
        if not tables or not words:
            return []
        ids = self.ids_of(words)
        digits = (ids + 1).astype(np.uint64)  # out-of-vocabulary words are digit 0, never part of an entry
        lengths = sorted(tables)
        found: list[Match] = []
        h = np.zeros(len(ids), dtype=np.uint64)
        for k in range(1, lengths[-1] + 1):
            if k > len(ids):
                break
            # h[i] = hash of ids[i:i+k], from the hash of ids[i:i+k-1]
            h = h[: len(ids) - k + 1] * _PRIME + digits[k - 1:]
            table = tables.get(k)
            if table is None:
                continue
            pos = np.searchsorted(table, h)
            pos[pos == len(table)] = 0
            for i in np.flatnonzero(table[pos] == h).tolist():
                entry = self.entries.get(tuple(ids[i:i + k].tolist()))
                if entry is not None:  # a hash collision otherwise
                    found.append(Match(i, k, entry))
        found.sort(key=lambda m: (m.start, -m.length))
        return found


def _hashes(grams: np.ndarray) -> np.ndarray:
    """Hash of each row of a (m, k) array of word ids, computed exactly as `find` computes windows."""
    h = np.zeros(len(grams), dtype=np.uint64)
    for column in (grams + 1).astype(np.uint64).T:
        h = h * _PRIME + column
    return h
