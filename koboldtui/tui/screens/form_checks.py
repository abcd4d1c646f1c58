"""What the instance form checks before a save, and under which field each problem shows.

Problems come in words from several places (the form's own checks, ``ServeConfig.validate``
in CLI words, the kind's fields); this module knows which field each one is about.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
# Which field a problem belongs to, by the words it uses (config.validate speaks CLI flags).
FIELD_OF_PROBLEM = (
    ("model path:", "model_path"),
    ("parallel slots", "parallel"), ("the ctx field", "ctx"), ("the batch size", "batch_size"),
    ("the threads field", "threads"), ("Horde API key field", "horde_key"), ("worker name field", "horde_name"),
    ("Horde window field", "horde_window"), ("Horde URL field", "horde_url"),
    ("name:", "name"), ("port", "port"), ("gpu_layers", "gpu_layers"), ("--ctx", "ctx"), ("ctx:", "ctx"),
    ("--parallel", "parallel"), ("parallel:", "parallel"), ("--batch-size", "batch_size"),
    ("batch_size:", "batch_size"), ("--threads", "threads"), ("threads:", "threads"),
    ("API key", "horde_key"), ("--horde-key", "horde_key"), ("needs a name", "horde_name"),
    ("--horde-name", "horde_name"), ("window", "horde_window"), ("--horde-url", "horde_url"),
    ("Horde URL", "horde_url"),
)
FIELDS_WITH_MESSAGES = ("model_path", "name", "ctx", "parallel", "batch_size", "threads", "horde_name", "horde_key",
                        "horde_window", "horde_url")


def field_of(problem: str) -> str | None:
    """The form field a problem is about, or None (shown under the form only)."""
    return next((field for word, field in FIELD_OF_PROBLEM if word in problem), None)


def as_int(text: str) -> int | None:
    """A field's whole number, or None when it is not one (the caller words the problem)."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def as_float(text: str) -> float | None:
    """A field's number, or None when it is not one."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def kind_problems(kind: str, command: str, health: str, url: str) -> list[str]:
    """The kind's own fields, checked as the CLI checks them (the save re-checks everything)."""
    if kind == "command":
        if "{port}" not in command:
            return [("command: put {port} where the server takes its port, "
                     "e.g. koboldcpp --port {port} --model {model}")]
        if health and not health.startswith("/"):
            return ["health path: start it with '/', e.g. /health"]
    if kind == "remote" and not url.startswith(("http://", "https://")):
        return ["url: use http://host:port (or an SSH tunnel's http://127.0.0.1:PORT)"]
    return []
