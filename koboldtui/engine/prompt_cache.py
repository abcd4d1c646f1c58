"""Applying a slot choice to llama.cpp's memory: keep the cached prefix, shift, drop the rest.

``slots.py`` decides which slot and how many cached tokens a prompt can reuse; this module
makes llama.cpp's KV agree (``llama_memory_seq_rm`` for the diverging tail,
``llama_memory_seq_add`` for a context shift) and refuses reuse that would not give the
same output as a cold run:

* the decode step needs logits, so at least one prompt token is always fed again;
* with sliding-window attention (Gemma 2/3) the first new token must see the last
  ``n_swa`` cached positions. llama.cpp overwrites window cells that fell out of the window
  (in the middle of the stream once a slot has been shifted), so each slot tracks
  ``safe_from``: below it, window cells may be gone, and reuse that needs them is refused;
* a model whose memory cannot shift (``llama_memory_can_shift``) reprocesses instead
  (logged once); a memory that cannot drop part of a sequence (recurrent/hybrid models)
  starts the slot from scratch.
"""

from __future__ import annotations

import logging

import llama_cpp

from koboldtui.engine.slots import ShiftPlan, Slot, SlotChoice

log = logging.getLogger(__name__)


class PromptCache:
    """Owns the bookkeeping between slots' cached tokens and the KV in llama.cpp's memory."""

    def __init__(self, mem: llama_cpp.llama_memory_t, n_swa: int) -> None:
        self._mem = mem
        self.n_swa = max(0, int(n_swa))
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(mem))
        self._told_no_shift = False

    def prepare(self, choice: SlotChoice, prompt: list[int]) -> tuple[int, bool]:
        """Make the slot's KV hold exactly the prompt's first N tokens; return (N, shifted).

        N < len(prompt) always: the last prompt token is fed again for its logits."""
        slot = choice.slot
        shift = choice.shift
        if shift is not None and not self.can_shift:
            if not self._told_no_shift:
                log.warning("this model's KV cache cannot be shifted (llama_memory_can_shift is false): "
                            "a conversation that outgrows the context is processed again instead")
                self._told_no_shift = True
            shift = None
        reuse = min(shift.reuse if shift else choice.prefix, len(prompt) - 1)
        if shift is not None and reuse <= shift.start:
            shift = None
            reuse = min(choice.prefix, len(prompt) - 1)
        if reuse > 0 and not self._window_intact(slot, reuse, shift):
            shift = None
            reuse = min(choice.prefix, len(prompt) - 1)
            if reuse > 0 and not self._window_intact(slot, reuse, None):
                reuse = 0
        if reuse <= 0:
            self.clear(slot)
            return 0, False
        if shift is not None:
            end = len(slot.cached)
            cut_to = shift.start + shift.discard
            if not llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, shift.start, cut_to):
                self.clear(slot)
                return 0, False
            llama_cpp.llama_memory_seq_add(self._mem, slot.seq_id, cut_to, end, -shift.discard)
            slot.safe_from = (slot.safe_from if slot.safe_from <= shift.start
                              else max(shift.start, slot.safe_from - shift.discard))
            slot.shifted = True
            del slot.cached[shift.start:cut_to]
        if reuse < len(slot.cached):
            if not llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, reuse, -1):
                self.clear(slot)  # recurrent/hybrid memory: cannot drop part of a sequence
                return 0, False
            del slot.cached[reuse:]
        return reuse, shift is not None

    def _window_intact(self, slot: Slot, reuse: int, shift: ShiftPlan | None) -> bool:
        """Are the window positions the first new token attends to still in the SWA cache?"""
        if self.n_swa <= 0:
            return True
        # The first new token (position ``reuse``) attends to positions > reuse - n_swa
        # (llama_hparams::is_masked_swa), in the coordinates after the shift.
        need_from = max(0, reuse - self.n_swa + 1)
        safe_from = slot.safe_from
        pos_min = int(llama_cpp.llama_memory_seq_pos_min(self._mem, slot.seq_id))
        safe_from = max(safe_from, pos_min)
        if shift is not None:
            start, discard = shift.start, shift.discard
            safe_from = safe_from if safe_from <= start else max(start, safe_from - discard)
        return need_from >= safe_from

    def fed(self, slot: Slot, tokens: list[int]) -> None:
        """Tokens went into the slot's KV at the next positions (after a successful decode)."""
        slot.cached.extend(tokens)
        if slot.shifted and self.n_swa:
            # After a shift llama.cpp refills the freed cells and then overwrites window cells
            # that fell out of the window, wherever they are in the stream: a cell at position
            # p is out of it once p <= pos_max + 1 - n_swa.
            slot.safe_from = max(slot.safe_from, len(slot.cached) + 1 - self.n_swa)

    def rollback(self, slot: Slot, keep: int) -> bool:
        """Drop everything after the first ``keep`` cached tokens; False if the memory cannot."""
        if llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            del slot.cached[keep:]
            return True
        self.clear(slot)
        return False

    def clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.forget()
