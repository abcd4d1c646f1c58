"""BatchPlan: the BLAS batch size the user picks and the micro-batch llama.cpp derives from it.

From KoboldCpp: the user sets ``n_batch`` (default 512); ``n_ubatch = min(n_batch, 1024)``.
Kept as its own type so the API, the panel and the engine agree on one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_N_BATCH = 512
MAX_N_UBATCH = 1024


@dataclass(frozen=True)
class BatchPlan:
    n_batch: int = DEFAULT_N_BATCH

    def __post_init__(self) -> None:
        if self.n_batch < 1:
            raise ValueError(f"batch size must be at least 1, got {self.n_batch}")

    @property
    def n_ubatch(self) -> int:
        return min(self.n_batch, MAX_N_UBATCH)
