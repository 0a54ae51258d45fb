"""What of a stage's output reaches its Prefect task log, and what stays in the full log file.

The stage process writes everything (datatrove's per-file lines, tqdm redraws, library chatter) into
`.tinyfoundry/logs/<flow run>/<stage>.log`. The Prefect log gets what a user reads: every line of our own
`tinyfoundry.*` loggers (what started, what was dropped and why, the result), progress bars at most every
`progress_every_s` seconds plus their completion, the first few warnings and errors of each library logger,
tracebacks, and at the end one line counting what stayed in the file.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable

LEVELS = r"(?P<level>DEBUG|INFO|SUCCESS|WARNING|ERROR|CRITICAL)"
# our CLI's logging format (tasks/__main__.py), MLflow's own, and loguru's (datatrove)
HEADERS = [
    re.compile(rf"\d\d:\d\d:\d\d {LEVELS} (?P<name>[\w.\-]+): "),
    re.compile(rf"\d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d {LEVELS} (?P<name>[\w.\-]+): "),
    re.compile(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \| {LEVELS}\s*\| (?P<name>[\w.\-]+)[:\s]"),
]
PROGRESS = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d{1,3})%\|.*?\[(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)[<\]]")
QUICK_S = 2
"""A bar that completed in less time than this is not shown (loading weights, tokenizing a few items)."""
OURS = "tinyfoundry"
LIBRARY_LINES_SHOWN = 3
"""Warnings/errors shown per library logger; the rest are counted."""


def split_embedded(line: str) -> list[str]:
    """A progress bar without a newline runs into the next log line: split them apart."""
    head = next((m.end() for h in HEADERS if (m := h.match(line))), 1)
    cut = min((m.start() for h in HEADERS if (m := h.search(line, head))), default=None)
    return [line] if cut is None else [line[:cut], *split_embedded(line[cut:])]


class StageLog:
    """Feed it the stage's output lines; it writes each one to the file and forwards the readable ones."""

    def __init__(self, path: Path, forward: Callable[[str], None], progress_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.file, self.forward = path, open(path, "a", encoding="utf-8"), forward
        self.progress_every_s, self.clock = progress_every_s, clock
        self.lines = self.shown = 0
        self.kept_back: Counter[str] = Counter()
        self.library_shown: Counter[str] = Counter()
        self.progress_at: dict[str, float] = {}
        self.progress_done: set[str] = set()
        self.following = False  # continuation lines (a traceback, a multi-line message) follow their head line

    def feed(self, raw: str) -> None:
        # a progress bar redraws with \r: only its latest state counts
        for segment in raw.split("\n"):
            for latest in [part for part in segment.split("\r") if part.strip()][-1:]:
                for line in split_embedded(latest):
                    if line.strip():
                        self._line(line.rstrip())

    def _line(self, line: str) -> None:
        self.lines += 1
        self.file.write(line + "\n")
        show = self._decide(line)
        if show:
            self.shown += 1
            self.forward(line)

    def _decide(self, line: str) -> bool:
        for header in HEADERS:
            m = header.match(line)
            if m:
                name, level = m["name"], m["level"]
                if name.split(".")[0] == OURS:
                    self.following = True
                elif level in ("WARNING", "ERROR", "CRITICAL") and self.library_shown[name] < LIBRARY_LINES_SHOWN:
                    self.library_shown[name] += 1
                    self.following = True
                else:
                    self.kept_back[f"{name} {level}"] += 1
                    self.following = False
                return self.following
        if line.startswith("Traceback (most recent call last)"):
            self.following = True
            return True
        m = PROGRESS.match(line)
        if m:
            self.following = False
            elapsed = int(m["h"] or 0) * 3600 + int(m["m"]) * 60 + int(m["s"])
            return self._progress(m["desc"].strip() or "progress", int(m["pct"]), elapsed)
        return self.following

    def _progress(self, desc: str, pct: int, elapsed: int) -> bool:
        now = self.clock()
        if pct >= 100:
            if desc in self.progress_done or elapsed < QUICK_S:
                return False
            self.progress_done.add(desc)
            self.progress_at[desc] = now
            return True
        self.progress_done.discard(desc)  # a new pass of the same bar
        last = self.progress_at.get(desc)
        if last is None:
            self.progress_at[desc] = now  # the bar's first draw: wait a full interval before showing it
            return False
        if now - last >= self.progress_every_s:
            self.progress_at[desc] = now
            return True
        return False

    def close(self) -> str:
        """Close the file; the closing line for the Prefect log."""
        self.file.close()
        top = ", ".join(f"{k} ×{n}" for k, n in self.kept_back.most_common(4))
        more = f", +{len(self.kept_back) - 4} more" if len(self.kept_back) > 4 else ""
        return (f"full log: {self.path} ({self.lines} lines, {self.shown} shown here"
                f"{'; library output kept there: ' + top + more if top else ''})")
