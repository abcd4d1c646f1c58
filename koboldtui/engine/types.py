"""Data types shared by the engine, the HTTP API, the Horde worker and the panel.

One type per concept: a ``GenerationRequest`` is the same whether it came from a
KoboldAI client, an OpenAI client or the Horde worker; only its ``origin`` differs.
Nothing here imports llama_cpp.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


class Origin(str, enum.Enum):
    """Who asked: a person/local client, or the AI Horde worker."""

    LOCAL = "local"
    HORDE = "horde"

    @property
    def priority(self) -> int:
        """Lower runs first: local requests are always admitted before Horde jobs."""
        return 0 if self is Origin.LOCAL else 1


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end-of-generation token or a stop sequence
    LENGTH = "length"  # max_tokens reached
    ABORT = "abort"  # aborted by genkey / client gone / shutdown
    ERROR = "error"  # the engine failed on this request


class RequestState(str, enum.Enum):
    QUEUED = "queued"
    PROMPT = "prompt"  # prompt being fed in chunks of n_batch
    GENERATING = "generating"
    DONE = "done"
    ABORTED = "aborted"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    """KoboldAI-style sampler settings; defaults follow KoboldCpp's."""

    temperature: float = 0.7
    top_p: float = 0.92
    top_k: int = 100
    min_p: float = 0.0
    typical: float = 1.0
    tfs: float = 1.0
    top_a: float = 0.0
    rep_pen: float = 1.1
    rep_pen_range: int = 320
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1  # -1 = random; the seed used is reported in the result
    # KoboldCpp's extra samplers (engine/sampling.py maps each onto a llama.cpp sampler).
    mirostat: int = 0  # 0 off, 1 or 2 (replaces top-k/top-p/min-p/typical/XTC)
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dry_multiplier: float = 0.0  # 0 = DRY off
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 320
    dry_sequence_breakers: tuple[str, ...] = ()
    xtc_threshold: float = 0.2
    xtc_probability: float = 0.0  # 0 = XTC off
    dynatemp_range: float = 0.0  # temperature varies in [t - range, t + range] by entropy
    dynatemp_exponent: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias); -inf bans the token
    banned_strings: tuple[str, ...] = ()  # KoboldCpp banned_tokens: tokens containing them are banned
    grammar: str = ""  # GBNF; the output must match its ``root`` rule
    grammar_retain_state: bool = False  # go on from the last such request's grammar state (KoboldCpp)
    sampler_order: tuple[int, ...] = (6, 0, 1, 3, 4, 2, 5)  # KoboldCpp ids, see sampling.py
    logprobs: int = 0  # how many top alternatives to record per token (0 = no logprobs)


def new_genkey() -> str:
    return "KTUI" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class GenerationRequest:
    """One text generation, from any client.

    ``truncate_prompt``: True = cut the prompt from the left to fit
    ``context - max_tokens`` (KoboldAI/KoboldCpp behaviour); False = reject a prompt
    that does not fit with ``PromptTooLongError`` (OpenAI behaviour).
    ``max_context``: the client's own ``max_context_length`` (capped by the engine's).
    ``n_keep``: number of leading prompt tokens never discarded when the prompt is cut to
    fit (KoboldAI ``memory``, a system prompt): the cut, and a context shift of the cached
    KV, drop the oldest tokens *after* them (llama.cpp's ``n_keep``; 0 keeps only BOS).
    """

    prompt: str
    max_tokens: int = 100
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    ban_eos: bool = False
    origin: Origin = Origin.LOCAL
    genkey: str = field(default_factory=new_genkey)
    max_context: int | None = None
    truncate_prompt: bool = True
    n_keep: int = 0  # leading prompt tokens never discarded (KoboldAI memory, system prompt)
    bypass_eos: bool = False  # KoboldCpp: an end-of-generation token does not end the text
    render_special: bool = False  # KoboldCpp: special tokens appear in the text ("<end_of_turn>")

    @property
    def priority(self) -> int:
        return self.origin.priority


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token with its log-probability and the ``top`` most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """What a finished request produced, with the numbers the status and Horde need."""

    genkey: str
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    truncated_tokens: int  # tokens cut from the left of the prompt
    seed: int
    queued_at: float
    first_token_at: float | None
    finished_at: float
    error: str | None = None
    error_status: int = 500  # the HTTP status ``error`` answers with (422: the request's own grammar ended it)
    stop_text: str | None = None  # the stop sequence that ended the text (it is not in ``text``)
    logprobs: tuple[TokenLogprob, ...] | None = None  # per sampled token, when asked for
    cached_tokens: int = 0  # prompt tokens whose KV was reused from an earlier request

    @property
    def tokens_per_s(self) -> float:
        if self.first_token_at is None or self.completion_tokens <= 1:
            return 0.0
        span = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / span if span > 0 else 0.0


class EngineError(Exception):
    """Base for errors a client can act on; ``status`` is the HTTP code to answer with."""

    status = 400


class PromptTooLongError(EngineError):
    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens, self.max_tokens, self.n_ctx = prompt_tokens, max_tokens, n_ctx
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} "
            "for the completion). Please reduce the length of the prompt or the completion."
        )


class QueueFullError(EngineError):
    status = 503

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        super().__init__(
            f"the queue is full ({max_queue} requests waiting): retry later or raise --max-queue"
        )


class EngineClosedError(EngineError):
    status = 503

    def __init__(self) -> None:
        super().__init__("the engine is shutting down: retry on another instance")


@dataclass(frozen=True)
class QueueEntry:
    """One request as the status snapshot and the panel's queue table show it."""

    genkey: str
    origin: Origin
    state: RequestState
    prompt_tokens: int
    tokens: int
    tokens_per_s: float
    age_s: float
    cached_tokens: int = 0  # prompt tokens found in the slot's cache (not processed again)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["origin"] = self.origin.value
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class EngineTotals:
    requests: int = 0
    completed: int = 0
    aborted: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    last_tokens_per_s: float = 0.0  # aggregate generation speed over the last few seconds
    interrupted_steps: int = 0  # decode steps cut short so a new local request starts at once
    prompt_tokens_cached: int = 0  # prompt tokens reused from a slot's cache instead of processed
    context_shifts: int = 0  # times a slot's KV was shifted to drop old turns instead of recomputed
    prompts_shared: int = 0  # OpenAI n choices that got a copy of another choice's prompt KV


@dataclass(frozen=True)
class EngineSnapshot:
    """An immutable picture of the engine, cheap to take, safe to hand to any thread."""

    model_name: str
    model_path: str
    n_ctx: int  # the whole KV context
    n_ctx_per_seq: int  # what one request may use
    n_batch: int
    n_ubatch: int
    parallel: int
    slots_busy: int
    queue_depth: int  # waiting, not yet in a slot
    queue: tuple[QueueEntry, ...]
    totals: EngineTotals

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model_name, "path": self.model_path},
            "ctx": self.n_ctx,
            "ctx_per_seq": self.n_ctx_per_seq,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "parallel": self.parallel,
            "slots_busy": self.slots_busy,
            "queue_depth": self.queue_depth,
            "queue": [entry.to_dict() for entry in self.queue],
            "totals": asdict(self.totals),
        }
