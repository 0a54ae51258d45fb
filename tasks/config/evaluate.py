"""evaluate: HF export, lm-eval benchmarks, validation loss / bits per byte, generations, champion selection."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import FieldProblem, Section

# Benchmark file formats a local task can read (tasks/evaluate/benchmarks.py), each scored with the prompts of
# the standard lm-eval task of the same name.
FORMATS = ("piqa", "openbookqa", "lambada_openai", "hellaswag", "arc_easy", "arc_challenge", "winogrande")
# metrics each format's standard task reports (its YAML's metric_list; tests/test_config.py checks them), and
# which way each is better
FORMAT_METRICS = {"piqa": ("acc", "acc_norm"), "openbookqa": ("acc", "acc_norm"), "lambada_openai": ("perplexity", "acc"),
                  "hellaswag": ("acc", "acc_norm"), "arc_easy": ("acc", "acc_norm"), "arc_challenge": ("acc", "acc_norm"),
                  "winogrande": ("acc",)}
LOWER_IS_BETTER = {"perplexity", "bpb", "val_loss"}


class BenchmarkTask(Section):
    name: str
    """Name the results are reported under (metrics/eval.json `<name>.acc`, ...). Without `data`, the standard
    lm-eval task of this name is run (its dataset must be reachable: HF cache or network)."""
    format: Literal[FORMATS] | None = None  # type: ignore[valid-type]
    """File format of `data` and the standard task whose prompts and metrics are used; defaults to `name`."""
    data: str | None = None
    """Benchmark file in its original format: a name inside the fetched eval folder, an absolute path or any
    fsspec URI (file://, https://, ...). JSON lines, optionally .gz."""
    labels: str | None = None
    """PIQA only: the labels file (one 0/1 per line, same order as `data`)."""
    limit: int | None = Field(None, ge=1)
    """Score only the first `limit` items (None: all)."""

    @model_validator(mode="after")
    def _check(self):
        if self.data is None:
            if self.labels is not None or self.format is not None:
                raise ValueError(f"task {self.name!r}: labels/format need a data file")
            return self
        if self.resolved_format is None:
            raise ValueError(
                f"task {self.name!r} has a data file but no known format; set format to one of {', '.join(FORMATS)}"
            )
        if self.labels is not None and self.resolved_format != "piqa":
            raise ValueError(f"task {self.name!r}: a separate labels file is only read for the piqa format")
        return self

    @property
    def resolved_format(self) -> str | None:
        return self.format or (self.name if self.name in FORMATS else None)


class EvaluateConfig(Section):
    tasks: list[BenchmarkTask] = [
        BenchmarkTask(name="piqa", data="piqa_valid.jsonl", labels="piqa_valid-labels.lst"),
        BenchmarkTask(name="openbookqa", data="openbookqa_main_test.jsonl"),
    ]
    """lm-eval tasks, zero-shot."""
    batch_size: int = Field(16, ge=1)
    """lm-eval batch size (sequences per forward)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available, else cpu."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights/activations dtype for evaluation; float32 keeps the numbers comparable across machines."""
    bootstrap_iters: int = Field(1000, ge=0)
    """lm-eval bootstrap resamples for stderr of non-mean metrics (perplexity); 0 skips them."""
    sources: list[Literal["web", "books", "code"]] = ["web", "books", "code"]
    """Held-out sources (shards/val_docs/<source>.jsonl.gz) scored for validation loss and bits per byte."""
    bpb_tokens: int = Field(16384, ge=256)
    """Held-out tokens per source for validation loss and bits per byte (16k tokens: ~1% standard error of a
    10M model's bpb on CPU in seconds; raise it on GPU)."""
    prompts: list[str] = ["The history of the city", "def fibonacci(n):", "It was a dark and stormy night"]
    """Fixed prompts completed greedily into generations.jsonl."""
    max_new_tokens: int = Field(48, ge=1)
    candidates: Literal["final", "last", "all"] = "last"
    """Which registered versions of the training run are scored and compete for `champion` (the train stage
    registers every kept checkpoint and the final model): `final` (data/model only), `last` (the last `last_k` by
    step) or `all`. Each candidate costs one more evaluation (benchmarks + bits per byte)."""
    last_k: int = Field(2, ge=1)
    """Candidates with `candidates: last`."""
    champion_metric: str = "piqa/acc_norm"
    """Metric deciding the `champion` alias: `<task>/<metric>` (e.g. piqa/acc_norm), `bpb/<source>` or
    `val_loss/<source>`."""
    champion_mode: Literal["max", "min"] = "max"
    """max: a higher champion_metric wins (accuracy); min: a lower one wins (bpb, loss)."""
    seed: int = 0
    allow_task_errors: bool = False
    """false: a benchmark task that cannot run (missing file, unreachable dataset, no usable rows) fails the stage;
    true: it is recorded as skipped in results.json (with the error) and the other tasks still count."""

    @model_validator(mode="after")
    def _check(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        reserved = {"bpb", "val_loss", "champion", "checkpoint_sha256", "seconds"} & set(names)
        if reserved:
            raise ValueError(f"task names {sorted(reserved)} are reserved for other results; rename the task")
        head, sep, metric = self.champion_metric.partition("/")
        if not sep or not metric:
            raise ValueError(f"champion_metric must look like <task>/<metric> or bpb/<source>, got {self.champion_metric!r}")
        if head in ("bpb", "val_loss"):
            if metric not in self.sources:
                raise ValueError(f"champion_metric {self.champion_metric!r} names a source not in sources {self.sources}")
            known = head
        elif head not in names:
            raise ValueError(f"champion_metric {self.champion_metric!r} names a task not in tasks {names}")
        elif (fmt := self._format_of(head)) is None:
            known = None  # a standard lm-eval task: its metrics are only known once it ran
        elif metric not in FORMAT_METRICS[fmt]:
            raise FieldProblem("champion_metric", f"{self.champion_metric!r}: task {head} ({fmt}) reports "
                                                  f"{', '.join(FORMAT_METRICS[fmt])}, not {metric}")
        else:
            known = metric
        better = "min" if known in LOWER_IS_BETTER else "max"
        if known is not None and self.champion_mode != better:  # the wrong way round crowns the worst model
            raise FieldProblem("champion_mode", f"must be {better} for {self.champion_metric} "
                                                f"({'lower' if better == 'min' else 'higher'} is better), "
                                                f"got {self.champion_mode}")
        return self

    def _format_of(self, task: str) -> str | None:
        return next((t.resolved_format for t in self.tasks if t.name == task), None)
