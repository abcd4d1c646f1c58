"""LlamaEngine: continuous batching on llama.cpp's low-level API.

One decode thread owns one llama.cpp context with ``parallel`` sequence slots. Each
step it builds one ``llama_batch`` holding one token for every generating sequence plus
prompt chunks (up to ``n_batch`` tokens in all), calls ``llama_decode`` once, samples
each sequence with its own native sampler chain, and streams text back to asyncio.
A finished sequence leaves its tokens and KV in its slot (the prompt cache, slots.py /
prompt_cache.py); the next queued request takes the free slot holding the longest prefix
of its prompt at the next step, so a request never waits for another to finish and a
chat turn only processes what is new. Queue order: local before Horde; with ``preempt``
a local request may evict a Horde sequence (it resumes later).

This module keeps the queue, admission, the decode loop and sampling; what goes into a
step and how positions settle after it is step_plan.py, and OpenAI ``n`` > 1 prompt
sharing is twins.py.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import llama_cpp

from koboldtui.engine import native
from koboldtui.engine.chat_template import render_chat
from koboldtui.engine.engine_config import EngineConfig, lower_decode_priority, not_set
from koboldtui.engine.prompt_cache import PromptCache
from koboldtui.engine.request_prep import Prepared, RequestPreparer, free_unused
from koboldtui.engine.sampling import GrammarError, SamplerChain
from koboldtui.engine.sequence import GenerationStream, Sequence, deliver
from koboldtui.engine.slots import SlotPool, common_prefix
from koboldtui.engine.step_plan import SHORT_PROMPT_TOKENS, StepPlan, StepPlanner
from koboldtui.engine.text_bounds import warm_token_bytes_bound
from koboldtui.engine.twins import TwinPrompts
from koboldtui.engine.types import (
    EngineClosedError,
    EngineSnapshot,
    EngineTotals,
    FinishReason,
    GenerationRequest,
    Origin,
    QueueFullError,
    RequestState,
)

log = logging.getLogger(__name__)
RECENT_KEEP_S = 60.0  # finished requests stay in the status queue this long (the panel fades them)


class LlamaEngine:
    """The TextEngine for GGUF models; see the module docstring for how a step works."""

    _interrupt: bool  # read by llama.cpp's abort callback between graph nodes

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model_path = str(config.model_path)
        self.parallel = config.parallel
        self.n_batch = config.batch.n_batch
        self.n_ubatch = config.batch.n_ubatch
        self.n_ctx_per_seq = config.ctx
        self.n_ctx = config.ctx * config.parallel
        self.repack = native.choose_repack()
        log.info("weight repacking %s: %s", "on" if self.repack.use_extra_bufts else "off", self.repack.reason)
        self._model, self._split = native.load_model(
            config.model_path, gpu_layers=config.gpu_layers, main_gpu=config.main_gpu,
            tensor_split=list(config.tensor_split) if config.tensor_split else None, repack=self.repack,
            should_continue=not_set(config.cancel_load),
        )
        trained = int(llama_cpp.llama_model_n_ctx_train(self._model))
        if 0 < trained < self.n_ctx_per_seq:  # beyond it the model degrades into gibberish
            log.warning("--ctx %d is more than %s was trained for (%d): using %d per request",
                        self.n_ctx_per_seq, config.model_path.name, trained, trained)
            self.n_ctx_per_seq, self.n_ctx = trained, trained * self.parallel
        # llama_decode rejects batches above the context's n_batch: make room for one token per slot.
        self._step_capacity = max(self.n_batch, self.parallel)
        self.kv_layout = native.choose_kv_layout(
            parallel=self.parallel, n_swa=int(llama_cpp.llama_model_n_swa(self._model)),
            swa_full=config.swa_full, forced=config.kv_unified)
        log.info("KV cache %s: %s", "unified" if self.kv_layout.unified else "one stream per slot",
                 self.kv_layout.reason)
        try:
            self._ctx = native.create_context(
                self._model, n_ctx=self.n_ctx, n_batch=self._step_capacity,
                n_ubatch=min(self.n_ubatch, self._step_capacity), n_seq_max=self.parallel,
                threads=config.threads, swa_full=config.swa_full, kv_unified=self.kv_layout.unified,
            )
        except Exception:
            llama_cpp.llama_model_free(self._model)
            raise
        self.vocab = native.Vocab(self._model)
        self._preparer = RequestPreparer(self.vocab, self.n_ctx_per_seq)
        self.model_name = native.model_metadata(self._model, "general.name") or config.model_path.stem
        self.chat_template = native.model_chat_template(self._model)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._cache = PromptCache(self._mem, llama_cpp.llama_model_n_swa(self._model))
        self._pool = SlotPool(self.parallel)
        self._planner = StepPlanner(self._mem, self._cache, self._pool, self.n_batch, self._step_capacity)
        self._twins = TwinPrompts(self._mem, self._pool)
        self._piece_buf = ctypes.create_string_buffer(256)
        # Checked by llama.cpp's CPU backend between graph nodes (~3 % of a step here).
        self._abort_cb = llama_cpp.ggml_abort_callback(lambda _data: self._interrupt)
        llama_cpp.llama_set_abort_callback(self._ctx, self._abort_cb, None)

        self._cond = threading.Condition()
        self._pending: list[tuple[tuple[int, int], Sequence]] = []  # heap by (priority, order)
        self._slots: list[Sequence | None] = [None] * self.parallel
        self._recent: collections.deque[Sequence] = collections.deque(maxlen=64)
        self._order = 0
        self._closing = False
        self._decoding = False  # a llama_decode is in flight
        self.interrupted_steps = 0
        self._interrupt = False  # set by submit(): abort the step in flight (see _should_interrupt)
        self._totals = {"requests": 0, "completed": 0, "aborted": 0, "errors": 0,
                        "prompt_tokens": 0, "generated_tokens": 0, "prompt_tokens_cached": 0,
                        "context_shifts": 0, "prompts_shared": 0}
        # Events for asyncio, sent once per decode step: one loop wake-up per step instead of
        # one per token per sequence (each wake-up competes with the decode threads for CPU).
        self._outbox: list[tuple[GenerationStream, Callable[..., None], tuple[object, ...]]] = []
        self._rate: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)
        self.step_started_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="koboldtui-decode", daemon=True)
        self._thread.start()
        # The first prompt over 4 KB needs the vocabulary's longest token (text_bounds.py, a
        # pass over every token): read it now, at low priority, not in that request's TTFT.
        self._bounds = threading.Thread(target=warm_token_bytes_bound, args=(self.vocab,),
                                        name="koboldtui-token-bytes", daemon=True)
        self._bounds.start()

    # ------------------------------------------------------------------ public API
    def tokenize(self, text: str) -> list[int]:
        return self.vocab.tokenize(text)

    def detokenize(self, tokens: list[int]) -> str:
        return self.vocab.detokenize(tokens)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the GGUF's template (see engine/chat_template.py)."""
        return render_chat(self.chat_template, messages, builtin=native.apply_builtin_chat_template,
                           eos_token=self.vocab.token_text(self.vocab.eos))

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Queue a request (see TextEngine.submit); call from the event loop that reads it.

        Tokenizes and builds the sampler on the caller's thread: servers use ``submit_async``."""
        self._check_room()
        return self._enqueue([request], [self._preparer.prepare(request)])[0]

    async def submit_async(self, request: GenerationRequest) -> GenerationStream:
        """``submit`` with the slow part (tokenizing, fitting, building the sampler, which may
        compile a grammar) in a worker thread, so a big prompt never stalls the event loop:
        only the room check and the enqueue run on it. A full queue or a closing engine raises
        before any work; a caller cancelled meanwhile leaves nothing behind."""
        return (await self.submit_many_async([request]))[0]

    async def submit_many_async(self, requests: list[GenerationRequest]) -> list[GenerationStream]:
        """Queue requests that share one prompt (OpenAI ``n`` choices) as one unit.

        The prompt is tokenized and fitted once, each request gets its own sampler, and all
        are enqueued under one lock, so the decode thread admits them in the same step and
        feeds the prompt once (twins.py). Queued one by one, the first choice's prompt was
        often done before the next arrived and each choice fed the prompt again. The queue
        limit counts every request; all or none are queued."""
        self._check_room(len(requests))
        work = asyncio.get_running_loop().run_in_executor(None, self._preparer.prepare_many, requests)
        try:
            prepared = await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(free_unused)
            raise
        return self._enqueue(requests, prepared)

    def _check_room(self, count: int = 1) -> None:
        """Raise EngineClosedError / QueueFullError now rather than after tokenizing."""
        with self._cond:
            if self._closing:
                raise EngineClosedError()
            if self._queued_locked() + count > self.config.max_queue:
                raise QueueFullError(self.config.max_queue)

    def _queued_locked(self) -> int:
        return sum(1 for _, waiting in self._pending if not waiting.aborted)

    def _enqueue(self, requests: list[GenerationRequest], prepared: list[Prepared]) -> list[GenerationStream]:
        """Queue prepared requests together (cheap: the event loop's part of a submit)."""
        loop = asyncio.get_running_loop()
        streams: list[GenerationStream] = []
        with self._cond:
            if self._closing or self._queued_locked() + len(requests) > self.config.max_queue:
                for done in prepared:
                    done.sampler.free()
                if self._closing:
                    raise EngineClosedError()
                raise QueueFullError(self.config.max_queue)
            for request, ready in zip(requests, prepared, strict=True):
                stream = GenerationStream(request, loop, self.abort_stream)
                self._order += 1
                seq = Sequence(stream, ready.prompt, ready.max_tokens, ready.truncated, self._order, ready.sampler)
                heapq.heappush(self._pending, (seq.sort_key, seq))
                self._totals["requests"] += 1
                if self._should_interrupt(seq):
                    self._interrupt = True
                streams.append(stream)
            self._cond.notify()
        return streams

    def _should_interrupt(self, seq: Sequence) -> bool:
        """A new local request with a short prompt (after the prompt cache) cuts the step in
        flight short, if it could take a slot right away: llama.cpp stops between micro-batches,
        the engine keeps what was finished and redoes the rest after the newcomer's prompt-only
        step, so its first token never waits a whole step."""
        if seq.request.origin is not Origin.LOCAL or not self._decoding:
            return False
        free = [i for i, s in enumerate(self._slots) if s is None]
        if not free and not (self.config.preempt and any(
                s is not None and s.request.origin is Origin.HORDE for s in self._slots)):
            return False
        # list() takes a consistent copy: the decode thread may be growing or cutting a slot's record.
        cached = max((common_prefix(list(self._pool.slots[i].cached), seq.to_feed) for i in free), default=0)
        return len(seq.to_feed) - cached <= SHORT_PROMPT_TOKENS

    def abort(self, genkey: str) -> bool:
        """Abort the queued or running request with this id (``GenerationRequest.genkey``: the
        engine's own unique key, as the status shows it); True if it was found."""
        return self._abort_where(lambda seq: seq.request.genkey == genkey)

    def abort_stream(self, stream: GenerationStream) -> bool:
        """Abort exactly the request behind ``stream`` (its handle's ``abort``)."""
        return self._abort_where(lambda seq: seq.stream is stream)

    def _abort_where(self, match: Callable[[Sequence], bool]) -> bool:
        with self._cond:
            for seq in self._iter_live():
                if match(seq) and not seq.aborted:
                    seq.aborted = True
                    self._cond.notify()
                    return True
        return False

    def snapshot(self) -> EngineSnapshot:
        now = time.monotonic()
        with self._cond:
            live = list(self._iter_live())
            recent = [s for s in self._recent if s.finished_at and now - s.finished_at < RECENT_KEEP_S]
            busy = sum(1 for s in self._slots if s is not None)
            depth = len(self._pending)
            totals = dict(self._totals)
        entries = tuple(s.queue_entry(now) for s in sorted(live + recent, key=lambda s: s.queued_at))
        return EngineSnapshot(
            model_name=self.model_name, model_path=self.model_path, n_ctx=self.n_ctx,
            n_ctx_per_seq=self.n_ctx_per_seq, n_batch=self.n_batch, n_ubatch=self.n_ubatch,
            parallel=self.parallel, slots_busy=busy, queue_depth=depth, queue=entries,
            totals=EngineTotals(**totals, last_tokens_per_s=round(self._recent_rate(now), 2),
                                interrupted_steps=self.interrupted_steps),
        )

    def close(self) -> None:
        """Abort everything, stop the decode thread and free llama.cpp memory. Idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._interrupt = True  # cut a long step short instead of waiting it out
            for seq in self._iter_live():
                seq.aborted = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        if self._thread.is_alive():  # freeing now would pull memory from under llama_decode
            log.error("the decode thread did not stop within 60 s: leaving llama.cpp memory to the OS")
            return
        self._bounds.join()  # it reads the vocabulary: never free the model under it
        self._planner.free()
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # ------------------------------------------------------------------ admission
    def _iter_live(self):
        yield from (seq for _, seq in self._pending)
        yield from (seq for seq in self._slots if seq is not None)

    def _admit_locked(self) -> None:
        """Move queued requests into free slots, local first; preempt Horde if configured."""
        while self._pending:
            seq = self._pending[0][1]
            if seq.aborted:
                heapq.heappop(self._pending)
                self._finish(seq, FinishReason.ABORT)
                continue
            free = [i for i, s in enumerate(self._slots) if s is None]
            if not free and self.config.preempt and seq.request.origin is Origin.LOCAL:
                victims = [s for s in self._slots if s is not None and s.request.origin is Origin.HORDE]
                if victims:
                    victim = max(victims, key=lambda s: s.order)  # the newest Horde job loses least
                    self._release_slot(victim)
                    self._twins.orphan(victim)
                    victim.prepare_resume()
                    heapq.heappush(self._pending, (victim.sort_key, victim))
                    continue
            if not free:
                return
            heapq.heappop(self._pending)
            self._place(seq, free)

    def _place(self, seq: Sequence, free: list[int]) -> None:
        """Give ``seq`` the free slot that already holds most of its prompt, keep that part
        of the KV (shifted if older turns were dropped) and feed only the rest."""
        leader = self._twins.leader_for(seq, self._slots)
        if leader is not None:  # the same prompt is being fed right now: wait for a copy of it
            slot = self._pool.cold(seq.request.origin, free)
            self._cache.clear(slot)
            self._pool.take(slot, seq.request.origin)
            seq.seq_id, seq.n_past, seq.to_feed = slot.seq_id, 0, []
            seq.twin_of = leader
            leader.twins.append(seq)
            seq.state = RequestState.PROMPT
            self._slots[slot.seq_id] = seq
            return
        choice = self._pool.choose(seq.to_feed, seq.request.origin, free)
        assert choice is not None
        slot = choice.slot
        reuse, shifted = self._cache.prepare(choice, seq.to_feed)
        self._pool.take(slot, seq.request.origin)
        seq.seq_id = slot.seq_id
        seq.n_past = reuse
        del seq.to_feed[:reuse]
        if seq.preemptions == 0:
            seq.cached_tokens = reuse
            self._totals["prompt_tokens_cached"] += reuse
        if shifted:
            self._totals["context_shifts"] += 1
        seq.state = RequestState.PROMPT
        self._slots[slot.seq_id] = seq

    def _release_slot(self, seq: Sequence, keep_cache: bool = True) -> None:
        """Give the slot back; its tokens and KV stay for the next request unless told not to."""
        if seq.seq_id is not None:
            slot = self._pool.slots[seq.seq_id]
            self._pool.touch(slot)
            if not keep_cache:
                self._cache.clear(slot)
            self._slots[seq.seq_id] = None
            seq.seq_id = None

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None,
                error_status: int = 500) -> None:
        """End a sequence: free its slot and sampler, flush text, hand the result to asyncio."""
        self._release_slot(seq, keep_cache=reason is not FinishReason.ERROR)
        self._twins.orphan(seq)
        seq.finish_reason = reason
        seq.finished_at = time.monotonic()
        if reason is not FinishReason.ABORT and reason is not FinishReason.ERROR:
            tail = seq.flush_text()
            if tail:
                seq.text_parts.append(tail)
                self._post(seq.stream, seq.stream.push_text, tail)
        seq.state = {FinishReason.ABORT: RequestState.ABORTED, FinishReason.ERROR: RequestState.ERROR}.get(
            reason, RequestState.DONE)
        key = {FinishReason.ABORT: "aborted", FinishReason.ERROR: "errors"}.get(reason, "completed")
        self._totals[key] += 1
        self._totals["generated_tokens"] += len(seq.generated)
        self._totals["prompt_tokens"] += len(seq.prompt_tokens)
        if isinstance(seq.sampler, SamplerChain):
            seq.sampler.free()
        self._recent.append(seq)
        self._post(seq.stream, seq.stream.push_result, seq.result(error, error_status))

    def _post(self, stream: GenerationStream, fn: Callable[..., None], *args: object) -> None:
        """Queue ``fn(*args)`` for the stream's event loop; sent by ``_flush`` (decode thread only)."""
        self._outbox.append((stream, fn, args))

    def _flush(self) -> None:
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., None], tuple[object, ...]]]] = {}
        for stream, fn, args in self._outbox:
            by_loop.setdefault(stream.loop, []).append((fn, args))
        self._outbox = []
        for loop, calls in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, calls)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                pass

    # ------------------------------------------------------------------ decode loop
    def _run(self) -> None:
        lower_decode_priority()
        while True:
            with self._cond:
                while not self._closing and not self._pending and not any(self._slots):
                    self._cond.wait()
                for seq in [s for s in self._slots if s is not None and s.aborted]:
                    self._finish(seq, FinishReason.ABORT)
                if any(seq.aborted for _, seq in self._pending):  # answer aborts at once,
                    for _, seq in self._pending:  # not when they reach the front of the queue
                        if seq.aborted:
                            self._finish(seq, FinishReason.ABORT)
                    self._pending = [entry for entry in self._pending if not entry[1].aborted]
                    heapq.heapify(self._pending)
                if self._closing:
                    while self._pending:
                        self._finish(heapq.heappop(self._pending)[1], FinishReason.ABORT)
                    self._flush()
                    return
                self._admit_locked()
                self._interrupt = self._closing  # an interrupt asked for before admission is served
                active = [s for s in self._slots if s is not None]
            if active:
                self.step_started_at = time.monotonic()  # decode_heartbeat(): a wedged step shows
                try:
                    self._step(active)
                except Exception as exc:  # never let one bad step kill the server
                    log.exception("decode step failed")
                    with self._cond:
                        for seq in active:
                            if seq.finish_reason is None:
                                self._finish(seq, FinishReason.ERROR, f"decode failed: {exc}")
                self.step_started_at = None
            self._flush()

    def decode_heartbeat(self) -> tuple[bool, float]:
        """(decode thread alive, seconds the step in progress has run, 0 when idle), for /health."""
        started = self.step_started_at
        return self._thread.is_alive(), (time.monotonic() - started) if started else 0.0

    def _step(self, active: list[Sequence]) -> None:
        """One decode step: plan the batch, decode it, and sample what it produced."""
        plan: StepPlan = self._planner.plan(active)
        if self._planner.batch.n_tokens == 0:
            return
        self._decoding = True
        try:
            rc = llama_cpp.llama_decode(self._ctx, self._planner.batch)
        finally:
            self._decoding = False
            self._interrupt = False
        if rc == 2:  # interrupted for a new local request
            self._planner.keep_finished_work(plan)
            self.interrupted_steps += 1
            return
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self._planner.decoded(plan)  # positions advance only after a successful decode
        shared = self._twins.fork(plan.outputs)
        if shared:
            with self._cond:
                self._totals["prompts_shared"] += shared
        self._sample(plan.outputs)

    def _sample(self, outputs: list[tuple[Sequence, int]]) -> None:
        """Sample every sequence that got logits, outside the lock that submit/abort/snapshot
        take; then, under it, stream the text and finish what is done."""
        now = time.monotonic()
        sampled: list[tuple[Sequence, int]] = []
        refused: list[tuple[Sequence, GrammarError]] = []
        for seq, index in outputs:
            if seq.aborted or seq.finish_reason is not None:
                continue
            try:
                sampled.append((seq, cast(SamplerChain, seq.sampler).sample(self._ctx, index)))
            except GrammarError as exc:  # this request's grammar left no token: it alone ends
                refused.append((seq, exc))
        generated_now = 0
        with self._cond:
            for seq, exc in refused:
                self._finish(seq, FinishReason.ERROR, str(exc), error_status=422)
            for seq, token in sampled:
                seq.state = RequestState.GENERATING
                if self.vocab.is_eog(token) and not (seq.request.ban_eos or seq.request.bypass_eos):
                    self._finish(seq, FinishReason.STOP)
                    continue
                seq.generated.append(token)
                generated_now += 1
                if seq.first_token_at is None:
                    seq.first_token_at = now
                text = seq.decode_piece(self.vocab.piece(token, self._piece_buf, seq.request.render_special))
                if text:
                    seq.text_parts.append(text)
                    self._post(seq.stream, seq.stream.push_text, text)
                if seq.stops.stopped:
                    self._finish(seq, FinishReason.STOP)
                elif len(seq.generated) >= seq.max_tokens or seq.n_past + 1 >= self.n_ctx_per_seq:
                    self._finish(seq, FinishReason.LENGTH)
                else:
                    seq.last_token = token
        if generated_now:
            self._rate.append((now, generated_now))

    def _recent_rate(self, now: float, window: float = 5.0) -> float:
        points = [(t, k) for t, k in list(self._rate) if now - t <= window]
        if len(points) < 2:
            return 0.0
        span = now - points[0][0]
        return sum(k for _, k in points[1:]) / span if span > 0 else 0.0
