"""KoboldAI / KoboldCpp request fields → the engine's SamplingParams and GenerationRequest.

Names, defaults and clamping follow KoboldCpp (``koboldcpp.py``'s ``generate``), so every
front end that talks to KoboldCpp gets the same behaviour here: ``memory`` is the kept
prefix of the prompt, ``max_length`` is lowered (never the prompt thrown away) when it
does not leave room for the prompt, ``use_default_badwordsids`` bans EOS, and the sampler
fields map onto llama.cpp samplers (engine/sampling.py). Fields llama.cpp cannot express
are accepted and listed in ``ignored_fields.py``. The OpenAI routes parse the same fields
through ``sampling_from_body`` (koboldcpp_dialect.py), so a grammar or a ban means the same on
every route.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from koboldtui.api.validation import (
    BadRequest,
    get_bool,
    get_int,
    get_number,
    get_str,
    get_str_list,
)
from koboldtui.engine.types import GenerationRequest, Origin, SamplingParams
from koboldtui.runtime import Runtime

DEFAULT_MAX_LENGTH = 180  # KoboldCpp's default
KOBOLD_LOGPROBS = 5  # KoboldCpp's logprobs_max
MAX_GRAMMAR_CHARS = 65_536


@dataclass(frozen=True)
class KoboldOptions:
    """How to shape the answer (not the generation): KoboldCpp's ``trim_stop`` and ``logprobs``."""

    trim_stop: bool = True
    logprobs: bool = False
    genkey: str = ""  # the client's key: selects among its own requests (request_book.py), never an id


def first_present(body: dict[str, Any], *names: str) -> str:
    """The first of ``names`` the body sets (aliases such as rep_pen / repetition_penalty)."""
    return next((n for n in names if body.get(n) is not None), names[0])


def parse_logit_bias(body: dict[str, Any], name: str = "logit_bias") -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` (KoboldCpp and OpenAI) → pairs; bias clamped to ±100, -100 bans."""
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object mapping token ids to biases, e.g. {{\"123\": -100}}", name)
    if len(value) > 1024:
        raise BadRequest(f"'{name}' has {len(value)} entries; at most 1024 are allowed", name)
    pairs = []
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise BadRequest(f"'{name}' keys must be token ids, got {key!r:.40}", name) from None
        bias = get_number({"bias": bias}, "bias", 0.0)
        bias = max(-100.0, min(100.0, bias))
        if token < 0:
            raise BadRequest(f"'{name}' token id {token} is negative", name)
        pairs.append((token, float("-inf") if bias <= -100.0 else bias))
    return tuple(pairs)


def _string_list(body: dict[str, Any], name: str, max_items: int) -> tuple[str, ...]:
    value = body.get(name)
    if isinstance(value, str) and value.strip().startswith("["):  # SillyTavern sends JSON text
        try:
            body = {name: json.loads(value)}
        except RecursionError:
            raise BadRequest(f"'{name}' is JSON text nested too deeply: send a flat list of strings", name) from None
        except ValueError:
            raise BadRequest(f"'{name}' must be a list of strings (or one as JSON text)", name) from None
    return get_str_list(body, name, max_items=max_items)


def _sampler_order(body: dict[str, Any]) -> tuple[int, ...]:
    value = body.get("sampler_order")
    default = SamplingParams().sampler_order
    if value is None or value == []:
        return default
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise BadRequest("'sampler_order' must be a list of sampler ids 0-6, e.g. [6,0,1,3,4,2,5]",
                         "sampler_order")
    if len(value) > 7 or any(not 0 <= v <= 6 for v in value):
        raise BadRequest("'sampler_order' holds ids 0-6, each at most once (6 rep_pen, 0 top_k, 1 top_a, "
                         "3 typical, 4 top_p, 2 tfs, 5 temperature)", "sampler_order")
    return tuple(value)


def custom_token_bans(body: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """KoboldCpp's ``custom_token_bans``: "12,345" (as SillyTavern sends it) or a list of ids,
    each banned (bias -100); entries that are not ids are skipped, as KoboldCpp does."""
    value = body.get("custom_token_bans")
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadRequest("'custom_token_bans' must be token ids separated by commas, e.g. \"12,345\"",
                         "custom_token_bans")
    if len(items) > 1024:
        raise BadRequest(f"'custom_token_bans' has {len(items)} entries; at most 1024 are allowed",
                         "custom_token_bans")
    ids = [int(t) if isinstance(t, int) and not isinstance(t, bool) else
           int(t.strip()) if isinstance(t, str) and t.strip().isdigit() else -1 for t in items]
    return tuple((t, float("-inf")) for t in dict.fromkeys(ids) if t >= 0)


def sampling_from_body(body: dict[str, Any], *, logprobs: int = 0,
                       defaults: SamplingParams | None = None) -> SamplingParams:
    """KoboldAI sampler fields → SamplingParams; unknown fields are ignored. ``defaults``
    fill the fields the body leaves out (KoboldCpp's unless a route has its own)."""
    d = defaults or SamplingParams()
    grammar = get_str(body, "grammar", "")
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise BadRequest(f"'grammar' is {len(grammar)} characters; at most {MAX_GRAMMAR_CHARS}", "grammar")
    mirostat = get_int(body, "mirostat", 0, lo=0, hi=2)
    return SamplingParams(
        temperature=get_number(body, "temperature", d.temperature, lo=0, hi=100),
        top_p=get_number(body, "top_p", d.top_p, lo=0, hi=1),
        top_k=get_int(body, "top_k", d.top_k, lo=0, hi=1_000_000),
        min_p=get_number(body, "min_p", d.min_p, lo=0, hi=1),
        typical=get_number(body, "typical", d.typical, lo=0, hi=1),
        tfs=get_number(body, "tfs", d.tfs, lo=0, hi=1),
        top_a=get_number(body, "top_a", d.top_a, lo=0, hi=100),
        rep_pen=get_number(body, first_present(body, "rep_pen", "repetition_penalty", "repeat_penalty"),
                           d.rep_pen, lo=0.01, hi=100),
        rep_pen_range=get_int(body, first_present(body, "rep_pen_range", "repeat_last_n"), d.rep_pen_range,
                              lo=-1, hi=1_000_000),
        presence_penalty=get_number(body, "presence_penalty", d.presence_penalty, lo=-100, hi=100),
        frequency_penalty=get_number(body, "frequency_penalty", d.frequency_penalty, lo=-100, hi=100),
        seed=get_int(body, "sampler_seed", d.seed, lo=-1, hi=2**32 - 1),
        mirostat=mirostat,
        mirostat_tau=get_number(body, "mirostat_tau", d.mirostat_tau, lo=0, hi=100),
        mirostat_eta=get_number(body, "mirostat_eta", d.mirostat_eta, lo=0, hi=10),
        dry_multiplier=get_number(body, "dry_multiplier", d.dry_multiplier, lo=0, hi=100),
        dry_base=get_number(body, "dry_base", d.dry_base, lo=1, hi=100),
        dry_allowed_length=get_int(body, "dry_allowed_length", d.dry_allowed_length, lo=0, hi=10_000),
        dry_penalty_last_n=get_int(body, "dry_penalty_last_n", d.dry_penalty_last_n, lo=-1, hi=1_000_000),
        dry_sequence_breakers=_string_list(body, "dry_sequence_breakers", 128),
        xtc_threshold=get_number(body, "xtc_threshold", d.xtc_threshold, lo=0, hi=1),
        xtc_probability=get_number(body, "xtc_probability", d.xtc_probability, lo=0, hi=1),
        dynatemp_range=get_number(body, "dynatemp_range", d.dynatemp_range, lo=0, hi=100),
        dynatemp_exponent=get_number(body, "dynatemp_exponent", d.dynatemp_exponent, lo=0, hi=100),
        logit_bias=parse_logit_bias(body) + custom_token_bans(body),
        banned_strings=_string_list(body, first_present(body, "banned_tokens", "banned_strings"), 512),
        grammar=grammar,
        grammar_retain_state=get_bool(body, "grammar_retain_state", False),
        sampler_order=_sampler_order(body),
        logprobs=logprobs,
    )


def clamp_lengths(max_length: int, max_context: int, ctx: int) -> tuple[int, int]:
    """KoboldCpp's clamp: the context is at most the instance's, and ``max_length`` leaves at
    least min(context - 4, 16) tokens for the prompt instead of pushing it out."""
    max_context = min(max_context, ctx)
    min_remain = min(max_context - 4, 16)
    return max(1, min(max_length, max_context - min_remain)), max_context


async def token_bytes_bound(engine: Any) -> int | None:
    """Bytes one token covers at most (engine/text_bounds.py), read off the event loop."""
    from koboldtui.engine.text_bounds import token_bytes_bound as bound

    return await asyncio.to_thread(bound, engine)


async def surely_enough_tail(engine: Any, prompt: str, max_context: int) -> str:
    """The end of ``prompt`` that still holds more tokens than the context: cutting the rest
    first spares tokenizing megabytes that left-truncation would throw away anyway."""
    if len(prompt) <= 4096:
        return prompt
    bound = await token_bytes_bound(engine)
    keep = bound * (max_context + 1) if bound else None
    return prompt[-keep:] if keep is not None and len(prompt) > keep else prompt


async def read_ban_texts(engine: Any, sampling: SamplingParams) -> None:
    """Banned strings are matched against every token's text: read those once, off the loop."""
    if sampling.banned_strings:
        from koboldtui.engine.text_bounds import read_token_texts

        await asyncio.to_thread(read_token_texts, engine)


async def request_from_body(runtime: Runtime, body: dict[str, Any]) -> tuple[GenerationRequest, KoboldOptions]:
    """The generation a KoboldAI body asks for, and how to shape its answer."""
    engine = runtime.require_engine()
    ctx = engine.n_ctx_per_seq
    prompt = get_str(body, "prompt", required=True)
    memory = get_str(body, "memory", "")
    max_length, max_context = clamp_lengths(
        get_int(body, "max_length", DEFAULT_MAX_LENGTH, lo=1, hi=10_000_000),
        get_int(body, "max_context_length", ctx, lo=16, hi=10_000_000), ctx)
    genkey = get_str(body, "genkey", "")
    if len(genkey) > 128:
        raise BadRequest("'genkey' must be at most 128 characters", "genkey")
    options = KoboldOptions(trim_stop=get_bool(body, "trim_stop", True),
                            logprobs=get_bool(body, "logprobs", False), genkey=genkey)
    sampling = sampling_from_body(body, logprobs=KOBOLD_LOGPROBS if options.logprobs else 0)
    n_keep = len(await asyncio.to_thread(engine.tokenize, memory)) if memory else 0
    prompt = await surely_enough_tail(engine, prompt, max_context)
    await read_ban_texts(engine, sampling)
    request = GenerationRequest(
        prompt=memory + prompt,
        max_tokens=max_length,
        sampling=sampling,
        stop=get_str_list(body, "stop_sequence"),
        ban_eos=get_bool(body, "ban_eos_token", False) or get_bool(body, "use_default_badwordsids", False),
        bypass_eos=get_bool(body, "bypass_eos", False),
        render_special=get_bool(body, "render_special", False),
        origin=Origin.LOCAL,
        max_context=max_context,
        truncate_prompt=True,
        n_keep=n_keep,
    )
    return request, options
