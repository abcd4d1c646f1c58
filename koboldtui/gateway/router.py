"""Which instance of a pool serves a request: the one holding its prefix, unless much busier; else the least busy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from koboldtui.gateway.affinity import PrefixTable
from koboldtui.gateway.backends import Backend

# a cache holder wins while it has a free slot or at most this many requests waiting (moving
# would recompute the prompt and evict another chat's cache there), else while it carries at
# most this many requests more than the least busy
AFFINITY_MARGIN = 2


@dataclass(frozen=True)
class Choice:
    backend: Backend
    matched_blocks: int
    affinity: bool | None  # True: sent for its cache; False: a cache holder was too busy; None: no holder


def choose(ready: Sequence[Backend], table: PrefixTable, hashes: Sequence[bytes], *,
           margin: int = AFFINITY_MARGIN, round_robin: bool = False, turn: int = 0) -> Choice:
    """Pick among ``ready`` (non-empty). ``round_robin`` ignores cache and load (for the bench)."""
    if round_robin:
        return Choice(ready[turn % len(ready)], 0, None)
    least = min(ready, key=lambda b: (b.load(), b.requests))
    best, best_blocks = least, 0
    for backend in ready:
        blocks = table.matched_blocks(backend.name, hashes)
        if blocks > best_blocks or (blocks == best_blocks and blocks and backend.load() < best.load()):
            best, best_blocks = backend, blocks
    if best_blocks == 0:
        return Choice(least, 0, None)
    if best.load() < best.parallel + margin or best.load() - least.load() <= margin:
        return Choice(best, best_blocks, True)
    return Choice(least, table.matched_blocks(least.name, hashes), False)
