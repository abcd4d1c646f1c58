"""Stop sequences on a token stream: hold back text that might be the start of a stop string.

Pure Python, no llama_cpp: the decode thread feeds decoded text, gets back what is safe to
emit now, and learns when a stop sequence completed (the stop text itself is never sent).
"""

from __future__ import annotations


class StopMatcher:
    """Cuts generated text at the first stop sequence, across token boundaries."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add decoded text; return the part that can be emitted now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        """At the end of generation, release text held back as a possible stop prefix."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
