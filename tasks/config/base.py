"""Shared base for config sections: strict, frozen, documented pydantic models."""
from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """params.yaml (or a profile) holds a bad value or an unknown key; the message names the key."""


class FieldProblem(ValueError):
    """Raised by a section's model validator about one of its fields, so the error names `section.field`."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values are validated on load, never mutated."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True)


def _describe(error: dict, prefix: str) -> str:
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in error["loc"]])
    problem = error.get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):
        return f"{key + '.' if key else ''}{problem.field} {problem}"
    if error["type"] == "extra_forbidden":
        return f"{key} is not a known key (check its spelling and section)"
    if error["type"] == "missing":
        return f"{key} is required but missing"
    msg = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = msg.replace("Input should be", "must be").replace("Input", "value")
    got = error.get("input")
    got = "" if isinstance(got, dict) else f", got {got!r}"  # a model validator's input is the whole section
    return f"{key} {msg[:1].lower() + msg[1:]}{got}"


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    return "; ".join(_describe(e, prefix) for e in err.errors())


def inherit_default(data: dict, key: str, children: tuple[str, ...]) -> dict:
    """Copy a section-level default (e.g. ingest.executor) into each child section that does not set it."""
    if not isinstance(data, dict) or key not in data:
        return data
    data = dict(data)
    default = data.pop(key)
    for child in children:
        sub = data.get(child)
        if isinstance(sub, dict) and key not in sub:
            data[child] = {key: default, **sub}
    return data


def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity: a Slurm or container cpuset), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_auto(value, auto: int):
    """The word `auto` → the count `auto` the caller worked out; anything else is left for the field to
    validate. A misspelt word fails here, naming both allowed forms."""
    if isinstance(value, str) and not value.strip().isdigit():
        if value != "auto":
            raise ValueError("must be a positive integer or 'auto'")
        return auto
    return value
