"""Stop sequences on a token stream: hold back text that might be the start of a stop string.

Pure Python, no llama_cpp: the decode thread feeds decoded text, gets back what is safe to
emit now, and learns when a stop sequence completed (the stop text itself is never sent;
``matched`` says which one it was, for KoboldCpp's ``trim_stop: false``).

The stops live in a trie, so a token costs one walk per position of the text that is not
yet safe (at most the longest stop), however many stops a client sends (a KoboldAI Lite
group chat sends dozens). The API bounds their number and length.
"""

from __future__ import annotations

MAX_STOPS = 256  # KoboldCpp's stop_token_max
MAX_STOP_CHARS = 512

_END = ""  # trie key marking "a stop ends here" (no stop contains the empty string)


class StopMatcher:
    """Cuts generated text at the first stop sequence, across token boundaries."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self._trie: dict[str, dict] = {}
        for stop in self.stops:
            node = self._trie
            for ch in stop:
                node = node.setdefault(ch, {})
            node[_END] = {}
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def _scan(self, buf: str) -> tuple[int, int, int]:
        """(start, end) of the first complete stop (or -1, -1), and where a possible stop prefix
        that runs to the end of ``buf`` starts (len(buf) when none)."""
        hold_from = len(buf)
        for start in range(len(buf)):
            node = self._trie.get(buf[start])
            i = start + 1
            while node is not None:
                if _END in node:
                    return start, i, hold_from
                if i == len(buf):
                    hold_from = min(hold_from, start)
                    break
                node = node.get(buf[i])
                i += 1
        return -1, -1, hold_from

    def feed(self, text: str) -> str:
        """Add decoded text; return the part that can be emitted now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        start, end, hold_from = self._scan(buf)
        if start >= 0:
            self.stopped = True
            self.matched = buf[start:end]
            self._held = ""
            return buf[:start]
        self._held = buf[hold_from:]
        return buf[:hold_from]

    def flush(self) -> str:
        """At the end of generation, release text held back as a possible stop prefix."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
