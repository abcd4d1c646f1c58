"""Loading llama.cpp safely: CPU feature checks, model/context creation, token helpers.

The default llama-cpp-python build (GGML_NATIVE=ON) segfaults on the first decode on
CPUs with AMX, inside the weight-repack path (llama.cpp#20824). We read the build's
``llama_print_system_info()``: when it reports AMX, the model is loaded with
``use_extra_bufts = False`` (no repacking: safe, ~20 % slower single-stream); on every
other CPU repacking stays on, which is the fastest path. ``KOBOLDTUI_EXTRA_BUFTS=0|1``
overrides the choice.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

_backend_lock = threading.Lock()
_llama_log = logging.getLogger("koboldtui.llama_cpp")
_VERBOSE = os.environ.get("KOBOLDTUI_LLAMA_VERBOSE") == "1"
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5
_LEVELS = {2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


# What llama.cpp says when the engine interrupts a step on purpose (a new local request):
# expected, so not a warning.
_INTERRUPT_NOISE = (b"graph_compute:", b"failed to compute graph", b"removing memory module entries",
                    b"failed to decode, ret = 2")


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    py_level = _LEVELS.get(level, logging.DEBUG)
    if py_level >= logging.WARNING and any(noise in text for noise in _INTERRUPT_NOISE):
        py_level = logging.DEBUG
    if _VERBOSE or py_level >= logging.WARNING:
        _llama_log.log(max(py_level, logging.INFO if _VERBOSE else py_level),
                       text.decode("utf-8", "replace").rstrip())


_backend_ready = False


def ensure_backend() -> None:
    """Initialise llama.cpp's backend once per process."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama.cpp prints every loader line to stderr by default; route its log through
            # Python logging, warnings and errors only (KOBOLDTUI_LLAMA_VERBOSE=1: everything).
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


def system_info() -> str:
    ensure_backend()
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


@dataclass(frozen=True)
class RepackChoice:
    """Whether weight repacking (extra buffer types) is used, and why — shown in status/logs."""

    use_extra_bufts: bool
    reason: str


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where unknown)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def choose_repack(
    info: str | None = None, flags: set[str] | None = None, environ: dict[str, str] | None = None
) -> RepackChoice:
    """Pick the fastest path that does not crash on this CPU (see module docstring).

    AMX is looked for both in the build's system info and in the kernel's CPU flags: a
    native build only lists AMX when it compiled the AMX kernels, but a VM may expose
    the flags either way, and a slower safe load beats a segfault.
    """
    env = os.environ if environ is None else environ
    forced = env.get("KOBOLDTUI_EXTRA_BUFTS")
    if forced in ("0", "1"):
        return RepackChoice(forced == "1", f"KOBOLDTUI_EXTRA_BUFTS={forced} set by the user")
    info = system_info() if info is None else info
    flags = cpu_flags() if flags is None else flags
    if "AMX" in info or any(f.startswith("amx") for f in flags):
        return RepackChoice(
            False, "this CPU has AMX, where llama.cpp's weight repacking crashes on the first "
            "decode (llama.cpp#20824): repacking disabled (safe, ~20 % slower)"
        )
    return RepackChoice(True, "no AMX on this CPU: weight repacking enabled (fastest path)")


@dataclass(frozen=True)
class KvLayout:
    """Whether the slots share one KV buffer, and why — logged at start."""

    unified: bool
    reason: str


def choose_kv_layout(*, parallel: int, n_swa: int, swa_full: bool, forced: bool | None = None) -> KvLayout:
    """One KV buffer for all slots wherever that keeps context shift, else one per slot.

    With one stream per slot llama.cpp puts only consecutive sequence ids in one micro-batch:
    busy slots 0,2,4,6 decode 0.54-0.60x as fast as 0,1,2,3 (bench/prompt_cache.py, quiet
    2-core EPYC, 3 runs; 0.55 with 1,200-token histories in all 8 slots), and requests that
    end at different times leave such gaps. A unified buffer has no such rule: the same gapped
    step ran 0.92-1.04x the contiguous one (llama-server also unifies whenever it picks the
    slot count itself). But llama.cpp shifts a sliding-window model's KV only when its window
    cache is as large as the full one, and a unified window cache holds ``n_swa`` cells per
    slot plus a micro-batch of a buffer ``parallel`` times larger: Gemma 2/3 at any useful
    --ctx would lose context shift. So sliding-window models keep per-slot streams unless
    ``swa_full`` (then both caches are full size either way).
    """
    if forced is not None:
        return KvLayout(forced, f"KOBOLDTUI_KV_UNIFIED={int(forced)} set by the user")
    if parallel <= 1:
        return KvLayout(False, "one slot: nothing to share")
    if n_swa > 0 and not swa_full:
        return KvLayout(False, "sliding-window model: a KV stream per slot keeps context shift "
                               "(KOBOLDTUI_SWA_FULL=1 allows one shared buffer)")
    return KvLayout(True, "one KV buffer shared by all slots: busy slots need not be consecutive")


class ModelLoadError(RuntimeError):
    """The GGUF could not be loaded; the message says what to try."""


class ModelLoadCancelled(ModelLoadError):
    """The instance was stopped while its model was loading."""


def load_model(
    path: Path,
    *,
    gpu_layers: int,
    main_gpu: int = 0,
    tensor_split: list[float] | None = None,
    repack: RepackChoice | None = None,
    should_continue: Callable[[], bool] | None = None,
) -> tuple[llama_cpp.llama_model_p, ctypes.Array | None]:
    """Load a model with the safe repack choice. Returns (model, tensor_split array to keep alive).

    ``should_continue`` is asked as loading progresses; returning False cancels the load
    (a multi-minute load of a big model must not hold up Ctrl-C).
    """
    ensure_backend()
    repack = repack or choose_repack()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = int(gpu_layers)
    params.main_gpu = int(main_gpu)
    params.use_extra_bufts = repack.use_extra_bufts
    split_array = None
    if tensor_split:
        n = llama_cpp.llama_max_devices()
        values = (list(tensor_split) + [0.0] * n)[:n]
        split_array = (ctypes.c_float * n)(*values)
        params.tensor_split = split_array
    progress = None
    if should_continue is not None:
        progress = llama_cpp.llama_progress_callback(lambda _fraction, _data: bool(should_continue()))
        params.progress_callback = progress
    model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), params)
    del progress  # llama.cpp no longer calls it
    if not model:
        if should_continue is not None and not should_continue():
            raise ModelLoadCancelled(f"loading {path} was cancelled")
        raise ModelLoadError(
            f"llama.cpp could not load {path}: the file may be damaged, a GGUF for a newer "
            f"llama.cpp, or too large for the memory available ({_memory_advice(gpu_layers)})"
        )
    return model, split_array


def _memory_advice(gpu_layers: int) -> str:
    """What to lower when a model does not fit: GPU layers only when layers go to a GPU at all."""
    on_gpu = gpu_layers != 0 and os.environ.get("CUDA_VISIBLE_DEVICES") != ""
    try:
        on_gpu = on_gpu and bool(llama_cpp.llama_supports_gpu_offload())
    except AttributeError:  # an older binding: trust the layer count and the environment
        pass
    if on_gpu:
        return "try fewer --gpu-layers"
    return "it runs on the CPU: pick a smaller quantisation, or free some RAM"


def create_context(
    model: llama_cpp.llama_model_p,
    *,
    n_ctx: int,
    n_batch: int,
    n_ubatch: int,
    n_seq_max: int,
    threads: int,
    swa_full: bool = False,
    kv_unified: bool = False,
) -> llama_cpp.llama_context_p:
    """One context with ``n_seq_max`` independent KV streams of ``n_ctx / n_seq_max`` each,
    or (``kv_unified``) one buffer of ``n_ctx`` cells that every sequence draws from.

    ``swa_full``: sliding-window layers (Gemma 2/3) keep the whole context instead of the
    window plus a micro-batch: more memory and slower long-context steps (measured here:
    1.25-1.4x per step at 1,500 cached tokens), but the KV can be shifted at any context
    size (llama_memory_can_shift needs both caches the same size).
    """
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = int(n_ctx)
    params.n_batch = int(n_batch)
    params.n_ubatch = int(n_ubatch)
    params.n_seq_max = int(n_seq_max)
    params.n_threads = int(threads)
    params.n_threads_batch = int(threads)
    params.kv_unified = bool(kv_unified)
    params.swa_full = bool(swa_full)
    # The engine asks for logits of at most one token per sequence per step. Without this
    # cap llama.cpp reserves logits for a whole micro-batch: 512 x 262k floats = 512 MiB of
    # compute buffer for Gemma; with it, ~20 MiB.
    params.n_outputs_max = int(n_seq_max)
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise ModelLoadError(
            f"llama.cpp could not create a context of {n_ctx} tokens for {n_seq_max} slots: "
            "lower --ctx or --parallel (not enough memory for the KV cache)"
        )
    return ctx


class Vocab:
    """Tokenize and detokenize through one vocab pointer (read-only, safe across threads)."""

    def __init__(self, model: llama_cpp.llama_model_p) -> None:
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_tokens = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos = llama_cpp.llama_vocab_eos(self._vocab)
        self.eog_tokens = [t for t in range(self.n_tokens) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._piece_buf = ctypes.create_string_buffer(256)

    @property
    def pointer(self) -> llama_cpp.llama_vocab_p:
        """The llama.cpp vocab, for samplers that read token texts (grammar, DRY)."""
        return self._vocab

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8", "replace")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, True)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, True)
        return list(buf[:n])

    def piece(self, token: int, buf: ctypes.Array | None = None, special: bool = False) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character); ``special`` renders
        special tokens as their text, else they are empty. Not reentrant with the default
        buffer: the decode thread passes its own."""
        buf = buf if buf is not None else ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """A token as text, special tokens included ("<eos>"); "" for none."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def detokenize(self, tokens: list[int]) -> str:
        buf = ctypes.create_string_buffer(256)
        return b"".join(self.piece(t, buf) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


def model_metadata(model: llama_cpp.llama_model_p, key: str) -> str | None:
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def model_chat_template(model: llama_cpp.llama_model_p) -> str | None:
    raw = llama_cpp.llama_model_chat_template(model, None)
    return raw.decode("utf-8", "replace") if raw else None


def apply_builtin_chat_template(template: str, messages: list[dict[str, str]]) -> str | None:
    """llama.cpp's built-in template renderer (knows the common families); None if unknown."""
    arr = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, msg in enumerate(messages):
        role = str(msg.get("role", "user")).encode("utf-8")
        content = str(msg.get("content", "")).encode("utf-8")
        keep += [role, content]
        arr[i].role = role
        arr[i].content = content
    tmpl = template.encode("utf-8")
    size = sum(len(x) for x in keep) * 2 + 1024
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(tmpl, arr, len(messages), True, buf, size)
    if n < 0:
        return None
    if n > size:
        buf = ctypes.create_string_buffer(n + 1)
        n = llama_cpp.llama_chat_apply_template(tmpl, arr, len(messages), True, buf, n + 1)
    return buf.raw[:n].decode("utf-8", "replace")
