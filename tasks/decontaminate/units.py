"""The text of a benchmark item that training data must not contain, per benchmark format.

Rows come from `tasks.evaluate.benchmarks.read_benchmark` (the same parser evaluation uses, rows in the
schema of the Hub dataset). Each item gives a few units: its question or passage alone, each answer
alone, the question followed by each answer (a page that prints a question with its answer), and the
question followed by all its choices, bare and with their labels (a quiz page). Every unit is matched
as word n-grams; tasks/config/decontaminate.py says which units are too short to match on their own.
"""
from __future__ import annotations

from typing import Callable

Units = list[tuple[str, str]]  # (role, text): role is "question", "answer", "question+answer" or "item"


def _multiple_choice(question: str, choices: list[str], labels: list[str] | None = None) -> Units:
    units = [("question", question)] + [("answer", c) for c in choices]
    units += [("question+answer", f"{question} {c}") for c in choices]
    units.append(("item", " ".join([question, *choices])))
    if labels:  # as a quiz prints it: "... (A) make more phone calls (B) quit eating lunch out ..."
        units.append(("item", " ".join([question, *(f"{label} {c}" for label, c in zip(labels, choices))])))
    return units


def _piqa(row: dict) -> Units:
    return _multiple_choice(row["goal"], [row["sol1"], row["sol2"]])


def _openbookqa(row: dict) -> Units:
    return _multiple_choice(row["question_stem"], row["choices"]["text"], row["choices"]["label"])


def _arc(row: dict) -> Units:
    return _multiple_choice(row["question"], row["choices"]["text"], row["choices"]["label"])


def _hellaswag(row: dict) -> Units:
    context = row.get("ctx") or f"{row['ctx_a']} {row['ctx_b']}".strip()
    return _multiple_choice(context, row["endings"])


def _winogrande(row: dict) -> Units:
    # the sentence with its blank filled by each option: what a page quoting the item would contain
    filled = [("question+answer", row["sentence"].replace("_", row[k], 1)) for k in ("option1", "option2")]
    return [("question", row["sentence"].replace("_", " "))] + filled


def _lambada(row: dict) -> Units:
    return [("item", row["text"])]


UNITS: dict[str, Callable[[dict], Units]] = {
    "piqa": _piqa, "openbookqa": _openbookqa, "arc_easy": _arc, "arc_challenge": _arc,
    "hellaswag": _hellaswag, "winogrande": _winogrande, "lambada_openai": _lambada,
}


def item_units(fmt: str, row: dict) -> Units:
    return [(role, text) for role, text in UNITS[fmt](row) if text and text.strip()]
