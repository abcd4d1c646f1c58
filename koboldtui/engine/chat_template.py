"""Turn chat messages into a prompt with the model's own template.

llama.cpp's built-in renderer knows the common template families by sight and is tried
first (it is what llama-server does). A GGUF whose template it does not recognise gets
the template rendered as Jinja, in a sandbox, the way Hugging Face does; a model with no
template at all gets a plain "role: text" transcript.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def render_jinja(template: str, messages: list[dict[str, str]], *, eos_token: str = "") -> str | None:
    """The template rendered with ``add_generation_prompt``; None when it cannot be rendered.

    ``bos_token`` is rendered empty on purpose: the tokenizer adds BOS itself, and a
    second one in the text would be read as a second BOS.
    """
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token=eos_token)
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError):
        return None


def plain_transcript(messages: list[dict[str, str]]) -> str:
    """For models without a template: one "role: text" line each, then "assistant:"."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def render_chat(template: str | None, messages: list[dict[str, str]], *,
                builtin: Callable[[str, list[dict[str, str]]], str | None],
                eos_token: str = "") -> str:
    """llama.cpp's renderer, else Jinja, else the plain transcript."""
    if template:
        for attempt in (lambda: builtin(template, messages),
                        lambda: render_jinja(template, messages, eos_token=eos_token)):
            rendered = attempt()
            if rendered is not None:
                return rendered
    return plain_transcript(messages)
