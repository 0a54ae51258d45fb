"""evaluate: lm-eval benchmarks, bits per byte, champion selection."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class BenchmarkTask(Section):
    name: str
    """lm-eval task name (a local config for piqa/openbookqa/... or a standard task)."""
    data: str | None = None
    """Data file the local task reads (path under the fetched eval folder or an absolute path)."""
    labels: str | None = None
    limit: int | None = Field(None, ge=1)


class EvaluateConfig(Section):
    tasks: list[BenchmarkTask] = [
        BenchmarkTask(name="piqa", data="piqa_valid.jsonl", labels="piqa_valid-labels.lst"),
        BenchmarkTask(name="openbookqa", data="openbookqa_main_test.jsonl"),
    ]
    batch_size: int = Field(16, ge=1)
    champion_metric: str = "piqa/acc_norm"
    """Metric deciding the `champion` alias: `<task>/<metric>` or `bpb/<source>`."""
    champion_mode: Literal["max", "min"] = "max"
    prompts: list[str] = ["The history of the city", "def fibonacci(n):", "It was a dark and stormy night"]
    max_new_tokens: int = Field(48, ge=1)
    bpb_tokens: int = Field(65536, ge=256)
    """Held-out tokens per source for validation loss and bits per byte."""
    seed: int = 0
