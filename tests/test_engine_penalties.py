"""The window's penalties on a logit row (engine/penalties.py) give bit-for-bit the logits of
llama.cpp's own penalties sampler, including the ring that forgets the oldest token."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from koboldtui.engine.penalties import WindowPenalties

N_VOCAB = 4096


def llama_cpp_penalised(row: np.ndarray, window: int, rep: float, freq: float, present: float,
                        tokens: list[int]) -> np.ndarray:
    sampler = llama_cpp.llama_sampler_init_penalties(len(row), window, rep, freq, present)
    try:
        for token in tokens:
            llama_cpp.llama_sampler_accept(sampler, token)
        data = (llama_cpp.llama_token_data * len(row))()
        for i, logit in enumerate(row.tolist()):
            data[i].id, data[i].logit, data[i].p = i, logit, 0.0
        cur = llama_cpp.llama_token_data_array(data=data, size=len(row), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(cur))
        return np.array([data[i].logit for i in range(len(row))], dtype=np.float32)
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(("window", "rep", "freq", "present"), [
    (320, 1.1, 0.0, 0.0),  # KoboldCpp's defaults
    (16, 1.37, 0.0, 0.0),  # the window rolls over many times
    (64, 0.83, 0.41, 0.0),
    (64, 1.2, 0.0, 0.66),
    (8, 1.0, -0.3, 0.0),
])
def test_penalised_row_equals_llama_cpp_sampler(window, rep, freq, present):
    rng = np.random.default_rng(window)
    row = (rng.standard_normal(N_VOCAB) * 7).astype(np.float32)  # positive and negative logits
    prompt = rng.integers(0, 200, 150).tolist()  # few distinct tokens: counts above 1
    generated = rng.integers(0, 300, 90).tolist()
    penalties = WindowPenalties(N_VOCAB, window, rep, freq, present, prompt)
    for token in generated:
        penalties.accept(token)
    expected = llama_cpp_penalised(row, window, rep, freq, present, (prompt + generated)[-max(window, 1) * 3:])
    original = row.copy()
    applied = penalties.penalise(row)
    assert np.array_equal(row, expected) and not np.array_equal(row, original)
    WindowPenalties.restore(applied)
    assert np.array_equal(row, original)
