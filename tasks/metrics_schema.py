"""The one metrics schema of the pipeline: the keys every `metrics/<stage>.json` uses for what went in, what came
out and what was dropped, and why. The run report and the flow's one-line stage results read only these keys.

Common keys (beside each stage's own):
  docs_in, docs_out         documents read / written
  bytes_in                  bytes read (tokenizer: its training sample)
  tokens_in, tokens_out     tokens read (train: tokens trained on) / written (mix, shard)
  files_out, bytes_out      files / bytes written (fetch; ingest's bytes)
  dropped                   {reason: documents} -- everything the stage left out, by reason
  seconds                   the stage function's wall time (added by the CLI)

The CLI (`tasks/__main__.py`) passes every stage's stats through `conform`, which adds the common keys a stage
states in its own terms (dedup's `kept`, filter's `rejected_by_reason`, ...); `SCHEMA` lists what each stage
must end up with, and `missing` says what a metrics file lacks (tested on the real output of every stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class StageSchema:
    inp: tuple[str, str] | None = None
    """(key, unit) of what the stage read."""
    out: tuple[str, str] | None = None
    """(key, unit) of what the stage wrote."""
    dropped: bool = False
    """Whether the stage reports `dropped` (it can leave data out)."""

    @property
    def required(self) -> list[str]:
        keys = [k for k, _ in filter(None, (self.inp, self.out))]
        return keys + (["dropped"] if self.dropped else []) + ["seconds"]


SCHEMA: dict[str, StageSchema] = {
    "fetch": StageSchema(out=("files_out", "files")),
    "ingest": StageSchema(("docs_in", "docs"), ("docs_out", "docs"), dropped=True),
    "dedup": StageSchema(("docs_in", "docs"), ("docs_out", "docs"), dropped=True),
    "filter": StageSchema(("docs_in", "docs"), ("docs_out", "docs"), dropped=True),
    "decontaminate": StageSchema(("docs_in", "docs"), ("docs_out", "docs"), dropped=True),
    "tokenizer": StageSchema(("bytes_in", "bytes"), dropped=True),
    "mix": StageSchema(out=("tokens_out", "tokens"), dropped=True),
    "shard": StageSchema(("docs_in", "docs"), ("tokens_out", "tokens"), dropped=True),
    "train": StageSchema(("tokens_in", "tokens")),
    "evaluate": StageSchema(),
}


def _num(value: Any) -> float | int:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _counts(value: Any) -> dict[str, int]:
    return {str(k): v for k, v in (value or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# each stage's common keys in terms of its own (only keys the stage does not already write are added)
_DERIVE: dict[str, Callable[[dict], dict]] = {
    "fetch": lambda s: {"files_out": s.get("files"), "bytes_out": s.get("bytes")},
    "dedup": lambda s: {"docs_out": s.get("kept"),
                        "dropped": {**{k: v for k, v in (("exact_duplicate", s.get("exact_dups")),
                                                         ("near_duplicate", s.get("near_dups"))) if v},
                                    **_counts(s.get("skipped_by_reason"))}},
    "filter": lambda s: {"docs_out": s.get("docs_kept"),
                         "dropped": {**_counts(s.get("rejected_by_reason")),
                                     **({"unreadable": s["skipped_unreadable"]} if s.get("skipped_unreadable") else {})}},
    # removed documents and cut spans, as `contamination/<task>` (both are rejects with the matched n-gram)
    "decontaminate": lambda s: {"dropped": _counts(s.get("rejected_by_reason"))},
    "tokenizer": lambda s: {"bytes_in": sum(_num(v) for v in (s.get("sample_bytes") or {}).values()),
                            "dropped": _counts(s.get("skipped"))},
    "mix": lambda s: {"docs_out": _num(s.get("train_docs")) + _num(s.get("val_docs")),
                      "tokens_out": s.get("train_tokens"), "dropped": _counts(s.get("skipped"))},
    "shard": lambda s: {"docs_in": sum(_num((s.get(split) or {}).get("docs")) for split in ("train", "val")),
                        "tokens_out": sum(_num((s.get(split) or {}).get("tokens")) for split in ("train", "val")),
                        "dropped": _counts(s.get("skipped"))},
    "train": lambda s: {"tokens_in": s.get("tokens_seen")},
}


def conform(stage: str, stats: dict) -> dict:
    """`stats` with the common keys added where the stage states them in its own terms."""
    derived = _DERIVE.get(stage, lambda s: {})(stats)
    return {**{k: v for k, v in derived.items() if v is not None}, **stats}


def missing(stage: str, stats: dict) -> list[str]:
    """Common keys a stage's metrics should hold but do not."""
    schema = SCHEMA.get(stage.split("@")[0])
    return [k for k in schema.required if k not in stats] if schema else []


def summary(stage: str, stats: dict) -> dict:
    """{"in": (value, unit) | None, "out": ..., "dropped": {reason: n}, "seconds": s} for reports and logs."""
    schema = SCHEMA.get(stage.split("@")[0], StageSchema())

    def amount(key_unit: tuple[str, str] | None) -> tuple[float, str] | None:
        value = stats.get(key_unit[0]) if key_unit else None
        return (value, key_unit[1]) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return {"in": amount(schema.inp), "out": amount(schema.out), "dropped": _counts(stats.get("dropped")),
            "seconds": stats.get("seconds")}
