"""decontaminate: remove benchmark items (word n-gram overlap) from the training documents."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from .base import Section
from .evaluate import BenchmarkTask, EvaluateConfig
from .executor import ExecutorConfig

# Shortest unit (question, answer, question + answer, ...) matched on its own, per benchmark format; shorter
# units are only found inside longer ones. GPT-3 (Brown et al. 2020, app. C) sized its n-grams per benchmark
# with a floor of 8 words, "due to spurious collisions at lower values"; the floors below start there and go
# up where a format's short units are everyday phrases (docs/decontaminate.md has the measurements):
# - piqa: a solution of 8-9 words is a household instruction ("put it in the freezer for a few hours")
#   that recipe and how-to pages write too; 10 words is where such phrases stop matching real pages.
# - openbookqa, arc: answers are 1-3 words, questions often under 10: a bare answer never matches; the
#   question + answer (or the question with its choices) is what identifies an item.
# - hellaswag, winogrande, lambada: contexts, sentences and passages are long; the floor is GPT-3's.
MIN_WORDS: dict[str, int] = {"piqa": 10, "openbookqa": 8, "arc_easy": 8, "arc_challenge": 8, "hellaswag": 8,
                             "winogrande": 8, "lambada_openai": 8}


class DecontaminateConfig(Section):
    executor: ExecutorConfig = ExecutorConfig()
    """datatrove executor; each task takes whole input shards (the filter stage writes one per its task)."""
    tasks: list[BenchmarkTask] = EvaluateConfig().tasks
    """Benchmarks whose items must not be trained on. Left out or null in params.yaml: every task of
    `evaluate.tasks`, filled in when params.yaml is loaded (dvc.yaml tracks `evaluate.tasks` for this stage),
    so adding a benchmark to evaluation decontaminates against it too. Every item of a task's file counts,
    not only the first `limit` that evaluation scores. Each task needs a data file; [] turns the stage into
    a copy."""
    ngram_words: int = Field(13, ge=5, le=50)
    """Words per n-gram (GPT-3, OLMo/Dolma: 13). Units at least this long match through any of their n-grams."""
    min_words: dict[str, int] = {}
    """Per task name: units shorter than `ngram_words` but at least this long match as a whole; shorter ones
    only inside a longer unit. Tasks not named get their format's floor (MIN_WORDS above)."""
    action: Literal["cut", "remove"] = "cut"
    """cut: remove each matched span with `cut_window_chars` around it, keep the rest of the document (GPT-3);
    remove: drop every document with a match (datatrove, Dolma)."""
    cut_window_chars: int = Field(200, ge=0)
    """Characters removed on each side of a matched span (GPT-3: 200), so the item's neighbourhood (its other
    choices, its label) goes too."""
    min_fragment_chars: int = Field(200, ge=0)
    """A piece left between or around cuts that is shorter than this is removed with them (GPT-3: 200)."""
    max_cuts: int = Field(10, ge=1)
    """A document needing more cuts than this is removed whole (GPT-3: split into more than 10 pieces)."""

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[BenchmarkTask]) -> list[BenchmarkTask]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        for t in tasks:
            if t.data is None:
                raise ValueError(
                    f"task {t.name!r} has no data file, so there is nothing to decontaminate against: give it a "
                    f"data file in evaluate.tasks, or list the tasks to use in decontaminate.tasks ([] for none)")
        return tasks

    @field_validator("min_words")
    @classmethod
    def _min_words(cls, min_words: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        if "tasks" not in info.data or "ngram_words" not in info.data:
            return min_words  # already reported
        unknown = sorted(set(min_words) - {t.name for t in info.data["tasks"]})
        if unknown:
            raise ValueError(f"names tasks that are not decontaminated against: {unknown}")
        n = info.data["ngram_words"]
        bad = {name: words for name, words in min_words.items() if not 1 <= words <= n}
        if bad:
            raise ValueError(f"values must be between 1 and ngram_words ({n}): {bad}")
        return min_words

    def task_min_words(self, task: BenchmarkTask) -> int:
        return min(self.min_words.get(task.name, MIN_WORDS[task.resolved_format]), self.ngram_words)
