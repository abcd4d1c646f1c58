"""Keep each chat on the instance that has its prompt cached (Olla's prefix hash, SGLang's cache-aware router).

A prompt is cut into fixed blocks of characters; the hash of each prefix (block 1, blocks
1-2, ...) is remembered per instance, in a bounded LRU table, when that instance serves the
prompt. A new prompt's longest run of known prefix hashes says which instance holds most
of it in its slot cache. A chat that resends its growing history matches all its earlier
turns' blocks, so it sticks to one instance while others spread over the pool.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

BLOCK_CHARS = 128
TABLE_SIZE = 4096  # prefix hashes remembered per instance


def prompt_text(path: str, body: dict[str, Any]) -> str:
    """The text whose prefix the instance caches: chat messages in order, or prompt (with memory)."""
    if "messages" in body and isinstance(body["messages"], list):
        return json.dumps(body["messages"], sort_keys=True, ensure_ascii=False)[:-1]  # open end: grows
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else json.dumps(prompt)
    memory = body.get("memory") if path.startswith("/api/") else None
    return f"{memory or ''}{prompt or ''}"


def prefix_hashes(text: str, block: int = BLOCK_CHARS) -> list[bytes]:
    """Hashes of every whole-block prefix: chained, so hash i covers blocks 0..i."""
    hashes: list[bytes] = []
    running = hashlib.blake2b(digest_size=12)
    for start in range(0, len(text) - block + 1, block):
        running.update(text[start:start + block].encode("utf-8", "surrogatepass"))
        hashes.append(running.copy().digest())
    return hashes


class PrefixTable:
    """Per-instance LRU sets of prefix hashes; thread-safe, bounded by ``size`` per instance."""

    def __init__(self, size: int = TABLE_SIZE) -> None:
        self.size = size
        self._tables: dict[str, OrderedDict[bytes, None]] = {}
        self._lock = threading.Lock()

    def matched_blocks(self, name: str, hashes: Sequence[bytes]) -> int:
        """How many leading blocks of the prompt ``name`` has served (longest common prefix)."""
        with self._lock:
            table = self._tables.get(name)
            if not table:
                return 0
            # chained hashes: the longest match is the last known one (binary search would do,
            # but a prompt has few blocks and a miss usually comes early)
            count = 0
            for digest in hashes:
                if digest not in table:
                    break
                count += 1
            return count

    def record(self, name: str, hashes: Sequence[bytes]) -> None:
        """``name`` served this prompt: remember its prefixes (most recent last)."""
        with self._lock:
            table = self._tables.setdefault(name, OrderedDict())
            for digest in hashes:
                table[digest] = None
                table.move_to_end(digest)
            while len(table) > self.size:
                table.popitem(last=False)

    def forget(self, name: str) -> None:
        """``name`` restarted or stopped: its cache is gone."""
        with self._lock:
            self._tables.pop(name, None)
