"""KoboldCpp's fields on the OpenAI routes: what /v1/completions does with a KoboldCpp body.

KoboldCpp serves ``/v1/completions`` with the same ``generate()`` as ``/api/v1/generate``:
every KoboldCpp field (``grammar``, ``banned_strings``, ``dry_*``, ``sampler_order``,
``memory``, ...) applies there too, and only a few come from OpenAI's names (``max_tokens``,
``stop``, ``seed``, ``mirostat_mode``). SillyTavern's "Text Completion → KoboldCpp" mode
relies on that. So the sampler fields of both OpenAI routes are read here by
``kobold_fields.sampling_from_body`` — the one parser (and one grammar path) every route
shares — with OpenAI's defaults for what the body leaves out.

The context rule. KoboldCpp cuts an over-long prompt from the front on every route, always.
OpenAI refuses it (400 ``context_length_exceeded``), and OpenAI clients count on that: the
SDKs, litellm and langchain shorten their own history on that error, and a silent cut
would drop the start of their conversation (a system prompt) without a word. Both are
kept: a body that **speaks KoboldCpp** — carries any field only KoboldCpp defines
(``KOBOLDCPP_FIELDS``; SillyTavern's KoboldCpp mode always sends several) — gets
KoboldCpp's behaviour: the front of the prompt is cut (BOS and ``memory`` kept, as
KoboldCpp), ``max_tokens`` is lowered to leave the prompt room instead of a 400, and
KoboldCpp's wider ranges apply (temperature up to 100). A body with OpenAI fields only
keeps OpenAI's behaviour and ranges.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from koboldtui.api.kobold_fields import first_present, sampling_from_body
from koboldtui.api.validation import get_int, get_number
from koboldtui.engine.types import SamplingParams

# Fields KoboldCpp's generate() reads that no OpenAI-style API defines. Not in the list on
# purpose: top_k, min_p, repetition_penalty, repeat_penalty, logit_bias, seed — other
# OpenAI-compatible servers (llama.cpp, vLLM) take them too, so they say nothing.
KOBOLDCPP_FIELDS = frozenset({
    "memory", "max_context_length", "max_length", "rep_pen", "rep_pen_range", "rep_pen_slope",
    "top_a", "typical", "tfs", "nsigma", "mirostat", "mirostat_mode", "mirostat_tau", "mirostat_eta",
    "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
    "xtc_threshold", "xtc_probability", "sampler_order", "sampler_seed", "stop_sequence",
    "ban_eos_token", "use_default_badwordsids", "grammar", "grammar_retain_state", "genkey",
    "trim_stop", "dynatemp_range", "dynatemp_exponent", "smoothing_factor", "smoothing_curve",
    "render_special", "banned_strings", "banned_tokens", "bypass_eos", "custom_token_bans",
})

# What OpenAI's API does when a field is left out (KoboldCpp's own defaults differ).
OPENAI_DEFAULTS = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, rep_pen=1.0)
# KoboldCpp's logprobs_max: /v1/completions gives at most this many alternatives per token.
MAX_COMPLETION_LOGPROBS = 5


def speaks_koboldcpp(body: dict[str, Any]) -> bool:
    """True when the body carries a field only KoboldCpp defines (see the module's rule)."""
    return any(body.get(name) is not None for name in KOBOLDCPP_FIELDS)


def completion_logprob_count(body: dict[str, Any]) -> tuple[bool, int]:
    """/v1/completions ``logprobs``: an integer, clamped to 5 as KoboldCpp does (SillyTavern
    sends 10); ``true`` (the chat form, which some clients send here) means one."""
    given = body.get("logprobs")
    if isinstance(given, bool):
        return given, 1 if given else 0
    n = get_int(body, "logprobs", -1, lo=-1)
    return n >= 0, min(n, MAX_COMPLETION_LOGPROBS) if n >= 0 else 0


def openai_sampling(body: dict[str, Any], *, logprobs: int, seed: int, grammar: str) -> SamplingParams:
    """The samplers of an OpenAI-route body: KoboldCpp's fields through the shared parser,
    OpenAI's defaults and (for a body that does not speak KoboldCpp) OpenAI's ranges;
    ``seed`` and a ``response_format`` ``grammar`` come from the OpenAI names."""
    if not speaks_koboldcpp(body):
        _check_openai_ranges(body)
    view = dict(body)
    if body.get("mirostat_mode") is not None:  # KoboldCpp's name for it on the OpenAI routes
        view["mirostat"] = body["mirostat_mode"]
    view.pop("sampler_seed", None)  # the seed is the caller's (OpenAI ``seed`` first)
    sampling = sampling_from_body(view, logprobs=logprobs, defaults=OPENAI_DEFAULTS)
    changes: dict[str, Any] = {"seed": seed}
    if grammar:  # response_format wins over a raw grammar, as in KoboldCpp's chat route
        changes["grammar"] = grammar
    return replace(sampling, **changes)


def openai_seed(body: dict[str, Any]) -> int:
    """OpenAI ``seed`` (any 64-bit value, folded to 32 bits), else KoboldCpp's ``sampler_seed``."""
    name = first_present(body, "seed", "sampler_seed")
    seed = get_int(body, name, -1, lo=-1, hi=2**63 - 1)
    return seed % (2**32) if seed >= 0 else -1


def _check_openai_ranges(body: dict[str, Any]) -> None:
    """OpenAI's documented ranges: a plain OpenAI client gets the 400 it expects there."""
    get_number(body, "temperature", 1.0, lo=0, hi=2)
    get_number(body, "top_p", 1.0, lo=0, hi=1)
    get_number(body, "presence_penalty", 0.0, lo=-2, hi=2)
    get_number(body, "frequency_penalty", 0.0, lo=-2, hi=2)
