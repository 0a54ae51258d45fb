"""Credentials out of logs and MLflow params.

Config values can carry secrets: a URI with user-info (`https://user:token@host/...`, a tracking server's
password), a signed URL (`?X-Amz-Signature=...`), a Slurm `env_command` that exports `HF_TOKEN=...`. They are
needed to do the work, never to read the record of it: `redact` masks them wherever text leaves the process
(MLflow params, log records, uncaught tracebacks, the flow's copy of a stage's output).
"""
from __future__ import annotations

import logging
import re
import sys
import traceback

MASK = "***"
_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s;&|'\"]+)"
# a name that ends like a secret's: HF_TOKEN, AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_PASSWORD, X-Amz-Signature
_NAME = r"[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|signature)"
PATTERNS = [  # (what to find, what it becomes)
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@"), rf"\1{MASK}@"),  # scheme://user:password@host
    (re.compile(rf"([?&;](?:{_NAME}|sig|key|auth)=)[^&\s#'\"]+", re.I), rf"\1{MASK}"),  # signed URLs
    (re.compile(rf"((?<![\w-]){_NAME}\s*=\s*){_VALUE}", re.I), rf"\1{MASK}"),  # HF_TOKEN=..., password = ...
    (re.compile(rf"(--{_NAME}(?:=|\s+)){_VALUE}", re.I), rf"\1{MASK}"),  # --password ..., --api-key=...
]


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by ***, e.g. `https://u:p@h/x` → `https://***@h/x`."""
    if not isinstance(text, str):
        return text
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Handler filter: the rendered message (and traceback) of every record, with credentials masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Mask credentials in what `logger`'s handlers (default: the root's) write, and in uncaught tracebacks."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    sys.excepthook = lambda kind, exc, tb: sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))
