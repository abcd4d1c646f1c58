"""Horde job payloads ⇄ our types, with honest limits, so we only get jobs we can finish.

What we advertise (pop body) and what we run (``GenerationRequest``) come from the same
``WorkerLimits``, so they cannot disagree. Sampler keys we do not implement
(``rep_pen_slope``, ``smoothing_factor``) are ignored, and a malformed value falls back to
its default instead of failing the job: missing or unknown keys are normal in Horde payloads
(HORDE.md). ``sampler_order`` and ``dynatemp_*`` reach llama.cpp's samplers as for local requests.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koboldtui.engine.interface import GenerationHandle, TextEngine
from koboldtui.engine.types import (
    EngineError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Origin,
    SamplingParams,
)

DEFAULT_TTL_S = 150.0  # a job the server does not hear back about goes stale after this
MIN_ADVERTISED_LENGTH = 16  # never advertise less than this, however slow the instance
UNMEASURED_MAX_LENGTH = 128  # what we advertise until a Horde job has measured our speed
MIN_JOB_CONTEXT = 16  # like the KoboldAI route: a job's context is never below this
SUBMIT_MARGIN_S = 10.0  # a generation must end this long before the ttl, to submit in time
DEADLINE_POLL_S = 1.0  # how often a running job looks at the (injected) clock


class UnservablePayload(ValueError):
    """A job this instance cannot run as asked; the worker submits it ``faulted`` at once."""


@dataclass(frozen=True)
class WorkerLimits:
    """What one Horde job may use here: one slot's context, the tokens we make in time."""

    max_context_length: int
    max_length: int


def honest_limits(
    n_ctx_per_seq: int,
    requested_max_length: int,
    tokens_per_s: float | None = None,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    time_share: float = 0.5,
) -> WorkerLimits:
    """Limits we can keep: context never above one slot's, length that fits and finishes in time.

    ``max_length`` is at most half a slot (the prompt needs room) and, once Horde jobs
    have been measured, at most what ``tokens_per_s`` produces in ``time_share`` of the
    job's ``ttl`` (the rest is queueing, prompt processing and the network). Until then
    it is at most ``UNMEASURED_MAX_LENGTH``: a slow instance must not take jobs it cannot
    finish before it has measured that it is slow.
    """
    max_context = max(1, int(n_ctx_per_seq))
    length = min(int(requested_max_length), max_context // 2)
    if tokens_per_s and tokens_per_s > 0:
        length = min(length, int(tokens_per_s * ttl_s * time_share))
    else:
        length = min(length, UNMEASURED_MAX_LENGTH)
    length = max(min(MIN_ADVERTISED_LENGTH, max_context // 2), length)
    return WorkerLimits(max_context_length=max_context, max_length=max(1, length))


def default_model_name(model_path: str) -> str:
    """The Horde's convention for a GGUF: ``koboldcpp/<basename without .gguf>``."""
    name = Path(model_path).name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return f"koboldcpp/{name}"


def pop_body(
    *,
    name: str,
    models: list[str],
    limits: WorkerLimits,
    threads: int,
    bridge_agent: str,
    nsfw: bool,
    priority_usernames: list[str] | None = None,
    amount: int = 1,
) -> dict[str, Any]:
    """The body of ``POST /v2/generate/text/pop`` (HORDE.md: Pop)."""
    return {
        "name": name,
        "models": list(models),
        "max_length": limits.max_length,
        "max_context_length": limits.max_context_length,
        "priority_usernames": list(priority_usernames or []),
        "softprompts": [],
        "bridge_agent": bridge_agent,
        "threads": max(1, min(50, int(threads))),
        "amount": max(1, min(20, int(amount))),
        "nsfw": bool(nsfw),
    }


@dataclass(frozen=True)
class HordeJob:
    """One popped job: one generation per id in ``ids``, all from the same payload."""

    ids: tuple[str, ...]
    model: str
    ttl_s: float
    payload: dict[str, Any]

    @classmethod
    def from_pop(cls, data: dict[str, Any]) -> HordeJob | None:
        """The job in a pop answer, or None when the pop was empty."""
        ids = [str(i) for i in (data.get("ids") or []) if i]
        if not ids and data.get("id"):
            ids = [str(data["id"])]
        if not ids:
            return None
        payload = data.get("payload")
        ttl = _number(data.get("ttl"), DEFAULT_TTL_S, float)
        return cls(
            ids=tuple(ids),
            model=str(data.get("model") or ""),
            ttl_s=ttl if ttl > 0 else DEFAULT_TTL_S,
            payload=payload if isinstance(payload, dict) else {},
        )


def _number(value: Any, default: Any, kind: type) -> Any:
    if isinstance(value, bool) or value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(1e999)
        return default
    if isinstance(number, float) and not math.isfinite(number):
        return default
    return number


def _clamp(value: Any, low: float, high: float) -> Any:
    return max(low, min(high, value))


def _sampler_order(value: Any) -> tuple[int, ...]:
    """A requester's KoboldCpp sampler order, or the default when it is not a list of ids 0-6."""
    if (isinstance(value, list) and 0 < len(value) <= 7
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 6 for v in value)):
        return tuple(dict.fromkeys(value))
    return SamplingParams().sampler_order


def sampling_from_payload(
    payload: dict[str, Any], max_context: int, seed: int = -1
) -> SamplingParams:
    """Horde (KoboldAI) sampler keys → SamplingParams; missing or malformed keys get defaults."""
    d = SamplingParams()
    return SamplingParams(
        temperature=_clamp(_number(payload.get("temperature"), d.temperature, float), 0.0, 5.0),
        top_p=_clamp(_number(payload.get("top_p"), d.top_p, float), 0.0, 1.0),
        top_k=int(_clamp(_number(payload.get("top_k"), d.top_k, int), 0, 10_000)),
        min_p=_clamp(_number(payload.get("min_p"), d.min_p, float), 0.0, 1.0),
        typical=_clamp(_number(payload.get("typical"), d.typical, float), 0.0, 1.0),
        tfs=_clamp(_number(payload.get("tfs"), d.tfs, float), 0.0, 1.0),
        top_a=_clamp(_number(payload.get("top_a"), d.top_a, float), 0.0, 1.0),
        rep_pen=_clamp(_number(payload.get("rep_pen"), d.rep_pen, float), 1.0, 3.0),
        rep_pen_range=int(
            _clamp(_number(payload.get("rep_pen_range"), d.rep_pen_range, int), 0, max_context)
        ),
        dynatemp_range=_clamp(_number(payload.get("dynatemp_range"), d.dynatemp_range, float), 0.0, 5.0),
        dynatemp_exponent=_clamp(
            _number(payload.get("dynatemp_exponent"), d.dynatemp_exponent, float), 0.0, 10.0),
        sampler_order=_sampler_order(payload.get("sampler_order")),
        seed=seed,
    )


def job_request(
    payload: dict[str, Any], limits: WorkerLimits, *, index: int = 0
) -> GenerationRequest:
    """The engine request for generation ``index`` of a job; UnservablePayload if impossible."""
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        raise UnservablePayload("the job has no text prompt")
    if payload.get("softprompt"):
        raise UnservablePayload("the job asks for a soft prompt; this worker has none")
    asked_length = _number(payload.get("max_length"), 80, int)
    asked_context = _number(payload.get("max_context_length"), limits.max_context_length, int)
    # At least MIN_JOB_CONTEXT (like the KoboldAI route), never more than one slot holds.
    max_context = max(1, min(max(MIN_JOB_CONTEXT, asked_context), limits.max_context_length))
    # At least one token, and room left for at least one prompt token.
    max_tokens = max(1, min(asked_length, limits.max_length, max_context - 1))
    seed = _number(payload.get("seed"), -1, int)
    if seed >= 0:
        seed += index  # n > 1: different seeds, still reproducible
    stops = payload.get("stop_sequence") or []
    stop = tuple(s for s in stops if isinstance(s, str) and s) if isinstance(stops, list) else ()
    if payload.get("singleline"):
        stop += ("\n",)
    return GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling_from_payload(payload, max_context, seed),
        stop=stop,
        ban_eos=bool(payload.get("use_default_badwordsids", False)),
        origin=Origin.HORDE,
        max_context=max_context,
        truncate_prompt=True,
    )


_SENTENCE_END = re.compile(r"[.!?…\"'”’*)\]]")
_SPECIAL_CHARS = re.compile(r"[#/@%<>{}+=~|\^]")


def format_generation(text: str, payload: dict[str, Any]) -> str:
    """Apply KoboldAI's output formatting flags (``frmt*``, ``singleline``) the job asked for."""
    if payload.get("singleline"):
        text = text.split("\n", 1)[0]
    if payload.get("frmtrmspch"):
        text = _SPECIAL_CHARS.sub("", text)
    if payload.get("frmtrmblln"):
        text = re.sub(r"\n{2,}", "\n", text)
    if payload.get("frmttriminc"):
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends:
            text = text[: ends[-1]]
    return text


@dataclass(frozen=True)
class JobOutcome:
    """What to submit for one generation of a job: ``ok`` with text, or ``faulted`` with why."""

    text: str
    state: str  # "ok" | "faulted"
    seed: int
    error: str | None = None  # words for last_error when faulted for a reason worth showing
    result: GenerationResult | None = None


def submit_margin_s(ttl_s: float) -> float:
    """How long before a job's ttl its generation must end, so the submit still gets there."""
    return min(SUBMIT_MARGIN_S, ttl_s / 4)


async def _result_by(
    handle: GenerationHandle, deadline: float, clock: Callable[[], float]
) -> GenerationResult | None:
    """``handle.result()``, or None once ``clock()`` reaches ``deadline`` first.

    Looks at ``clock`` every ``DEADLINE_POLL_S`` (real) seconds at most, so an injected
    clock (tests) decides when the deadline passes; with ``time.monotonic`` this is
    ``asyncio.wait_for`` with the time left.
    """
    result = asyncio.ensure_future(handle.result())
    try:
        while not result.done():
            left = deadline - clock()
            if left <= 0:
                return None
            await asyncio.wait({result}, timeout=min(left, DEADLINE_POLL_S))
    finally:
        if not result.done():
            result.cancel()
    return result.result()


async def run_job_generation(
    engine: TextEngine,
    job: HordeJob,
    index: int,
    limits: WorkerLimits,
    on_handle: Callable[[GenerationRequest, GenerationHandle], None],
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobOutcome:
    """Run generation ``index`` of ``job`` in the engine at Horde priority; no EngineError escapes.

    ``on_handle`` gets the handle as soon as the engine queued it (so a forced stop can
    abort it). An aborted generation (forced stop, preemption) comes back ``faulted``, and
    so does one still running at ``deadline`` (on ``clock``): it is aborted so the job
    can be submitted faulted before its ttl instead of going stale.
    """
    try:
        request = job_request(job.payload, limits, index=index)
        handle = await engine.submit_async(request)
        on_handle(request, handle)
        if deadline is None:
            result = await handle.result()
        else:
            found = await _result_by(handle, deadline, clock)
            if found is None:
                handle.abort()
                return JobOutcome(
                    "",
                    "faulted",
                    0,
                    f"a Horde job could not finish within its time ({job.ttl_s:g} s ttl): "
                    "aborted and submitted as faulted; lower --horde-max-length or "
                    "--horde-threads if this happens often",
                )
            result = found
    except UnservablePayload as exc:
        return JobOutcome(
            "", "faulted", 0, f"a Horde job could not be served ({exc}): submitted as faulted"
        )
    except EngineError as exc:
        return JobOutcome(
            "", "faulted", 0, f"a Horde job failed in the engine ({exc}): submitted as faulted"
        )
    seed = max(0, result.seed)
    if result.finish_reason is FinishReason.ERROR:
        error = f"a Horde job failed in the engine ({result.error}): submitted as faulted"
        return JobOutcome("", "faulted", seed, error, result)
    if result.finish_reason is FinishReason.ABORT:
        return JobOutcome("", "faulted", seed, None, result)
    return JobOutcome(format_generation(result.text, job.payload), "ok", seed, None, result)
