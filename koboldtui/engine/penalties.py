"""Repetition penalties that touch only the window's tokens, not Gemma's 262k-token vocabulary.

llama.cpp's penalties sampler looks every candidate up in its token counts: a pass over the
whole vocabulary per token per sequence (engine/sampling.py cut that to the top k + W
tokens first, which still bucket-sorts the vocabulary). The penalty only changes the logits
of the (at most W) distinct tokens in the window, so this applies it to those logits in the
context's own logit row, lets the penalty-free chain draw, and puts the row back as it was
(twins and logprobs read the same row). The arithmetic is llama.cpp's, in float32, so the
draw is the same token: ``logit <= 0`` is multiplied by ``rep_pen``, else divided, then
``count * frequency + presence`` is subtracted.
"""

from __future__ import annotations

import collections
import ctypes
from collections.abc import Iterable

import llama_cpp
import numpy as np  # a llama-cpp-python dependency


class WindowPenalties:
    """The last ``window`` tokens (prompt tail, then each sampled token) and their counts."""

    def __init__(self, n_vocab: int, window: int, rep_pen: float, frequency: float, presence: float,
                 prompt: Iterable[int] = ()) -> None:
        self._n_vocab = n_vocab
        self._window: collections.deque[int] = collections.deque(maxlen=window)
        self._counts: dict[int, int] = {}
        # llama.cpp keeps these as float: the same rounding here gives the same logits.
        self._rep_pen = np.float32(rep_pen)
        self._frequency = np.float32(frequency)
        self._presence = np.float32(presence)
        for token in list(prompt)[-window:]:
            self.accept(token)

    def accept(self, token: int) -> None:
        """Record a token, forgetting the oldest once the window is full (as llama.cpp's ring)."""
        window, counts = self._window, self._counts
        if len(window) == window.maxlen:
            old = window[0]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        window.append(token)
        counts[token] = counts.get(token, 0) + 1

    def apply(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Penalise the window's tokens in the logit row of ``batch_index``; pass what this
        returns to ``restore`` once the token is drawn."""
        address = ctypes.cast(llama_cpp.llama_get_logits_ith(ctx, batch_index), ctypes.c_void_p).value
        row = np.frombuffer((ctypes.c_float * self._n_vocab).from_address(address), dtype=np.float32)
        return self.penalise(row)

    def penalise(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``apply`` on a float32 row of logits indexed by token id."""
        ids = np.fromiter(self._counts, dtype=np.intp, count=len(self._counts))
        saved = row[ids]
        penalised = np.where(saved <= 0, saved * self._rep_pen, saved / self._rep_pen)
        if self._frequency or self._presence:
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
            penalised -= counts * self._frequency + self._presence
        row[ids] = penalised
        return row, ids, saved

    @staticmethod
    def restore(applied: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        row, ids, saved = applied
        row[ids] = saved
