"""What each generation route accepts but does not apply, so a client can tell (``/api/extra/version``).

KoboldCpp reads the same fields on every route (its ``generate()`` is shared); these are the
ones it would honour there and this server does not, per route. A field a client sends that
is in neither KoboldCpp's nor OpenAI's API (SillyTavern sends many, for other back ends) is
simply not read and not listed. README "HTTP API" says why each is ignored.
"""

from __future__ import annotations

# llama.cpp (0.3.36) has no sampler for these; no vision/audio model; no classifier-free guidance.
NO_SAMPLER = ("top_a", "tfs", "nsigma", "smoothing_factor", "smoothing_curve", "rep_pen_slope")
NO_MEDIA = ("images", "audio", "negative_prompt", "guidance_scale")
# KoboldCpp's chat adapter and its {{[INPUT]}} placeholders: the GGUF's own template is used.
NO_ADAPTER = ("adapter", "replace_instruct_placeholders")

KOBOLD_IGNORED = NO_SAMPLER + NO_MEDIA + NO_ADAPTER
# The OpenAI routes never append the stop text (OpenAI's rule), whatever trim_stop says.
OPENAI_IGNORED = KOBOLD_IGNORED + ("trim_stop", "echo", "suffix", "best_of")

IGNORED_FIELDS: dict[str, tuple[str, ...]] = {
    "/api/v1/generate": KOBOLD_IGNORED,
    "/api/extra/generate/stream": KOBOLD_IGNORED,
    "/v1/completions": OPENAI_IGNORED,
    # chat renders the messages with the template: a KoboldCpp ``memory`` has no place there
    "/v1/chat/completions": OPENAI_IGNORED + ("memory",),
}


def ignored_fields() -> dict[str, list[str]]:
    """The ``ignored_fields`` object of /api/extra/version: route → field names."""
    return {route: sorted(names) for route, names in IGNORED_FIELDS.items()}
