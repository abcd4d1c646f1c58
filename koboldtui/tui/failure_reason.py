"""Why an instance failed, in a few words for its row, from the supervisor's ``last_error``.

``last_error`` is "exited with code 1; restarting in 4 s" followed by the last log lines;
the exit code alone rarely says what to fix, the log line that names the error does. The
row shows both, shortened; the detail pane (Enter) shows the whole text.
"""

from __future__ import annotations

import re

LOG_MARKER = "last log lines:"
# Words that mark the log line worth showing, strongest first.
ERROR_WORDS = (
    "failed to load", "out of memory", "no such file", "not a gguf", "invalid", "error",
    "exception", "failed", "cannot", "can't", "refused", "denied", "killed",
)
LOG_PREFIX = re.compile(r"^\s*(\d{4}-\d\d-\d\d[ T][\d:.,]+\s*)?(\[?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]?[: ]\s*)?"
                        r"([\w.]+:\s+)?")


def split_error(last_error: str | None) -> tuple[str, list[str]]:
    """(the supervisor's message, the log lines it attached)."""
    if not last_error:
        return "", []
    head, _, tail = last_error.partition(LOG_MARKER)
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return head.strip(), lines


def telling_line(lines: list[str]) -> str | None:
    """The log line that most likely names the cause (the last one with the strongest word)."""
    for word in ERROR_WORDS:
        for line in reversed(lines):
            if word in line.lower():
                return LOG_PREFIX.sub("", line, count=1).strip() or line
    return None


def short_reason(last_error: str | None, width: int = 60) -> str:
    """'exited with code 1 — llama_model_load: error loading model…' cut to ``width``."""
    message, lines = split_error(last_error)
    if not message and not lines:
        return "no reason recorded: see the log (l)"
    cause = telling_line(lines)
    text = f"{message} — {cause}" if message and cause else (cause or message)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
