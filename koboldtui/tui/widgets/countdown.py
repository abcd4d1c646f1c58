"""The live countdown of the Horde's local-priority window, drained by an injected clock.

Polls arrive about once a second; between them the bar drains smoothly from the last
reading, and when a local request restarts the window the reset is flagged visibly so
the person sees that their request pushed the Horde back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.widgets import Static

from koboldtui.tui import gauges

Clock = Callable[[], float]
RESET_FLASH_S = 1.5
BAR_WIDTH = 16


class LocalPriorityCountdown(Static):
    """Seconds left in the local-priority window plus a draining bar."""

    DEFAULT_CSS = """
    LocalPriorityCountdown { height: 1; }
    LocalPriorityCountdown.-reset { background: $warning 20%; }
    """

    def __init__(self, clock: Clock = time.monotonic, tick_s: float | None = 0.25, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._clock = clock
        self._tick_s = tick_s
        self.window_s = 0.0
        self._remaining_at_poll = 0.0
        self._polled_at = clock()
        self._reset_at: float | None = None
        self.resets = 0
        self._source: str | None = None
        self.enabled = False
        self._reason = "no Horde worker"
        self._last_text: str | None = None

    def on_mount(self) -> None:
        if self._tick_s:
            self.set_interval(self._tick_s, self.tick)
        self.tick()

    def set_window(
        self,
        remaining_s: float,
        window_s: float,
        polled_at: float | None = None,
        source: str | None = None,
    ) -> None:
        """Take a new reading; a jump upwards means a local request restarted the window."""
        same_source = source == self._source and self.enabled
        before = self.remaining()
        self._source = source
        self.enabled = True
        self.window_s = max(0.0, float(window_s))
        self._remaining_at_poll = max(0.0, float(remaining_s))
        self._polled_at = self._clock() if polled_at is None else polled_at
        if same_source and self._remaining_at_poll > before + 1.0:
            self.resets += 1
            self._reset_at = self._clock()
            self.add_class("-reset")
        self.tick()

    def disable(self, reason: str = "no Horde worker") -> None:
        """Nothing to count (no worker, or one that takes no jobs now): say why instead."""
        self.enabled = False
        self._reason = reason
        self._reset_at = None
        self.remove_class("-reset")
        self.tick()

    def remaining(self) -> float:
        """Seconds left now, drained from the last reading by the injected clock."""
        if not self.enabled:
            return 0.0
        return max(0.0, self._remaining_at_poll - (self._clock() - self._polled_at))

    def tick(self) -> None:
        """Redraw from the clock; also ends the reset flash."""
        now = self._clock()
        if self._reset_at is not None and now - self._reset_at >= RESET_FLASH_S:
            self._reset_at = None
            self.remove_class("-reset")
        text = self.render_text()
        if text != self._last_text:  # an idle panel repaints nothing (idle CPU)
            self._last_text = text
            self.update(text)

    def render_text(self) -> str:
        """The words and bar the person sees."""
        if not self.enabled:
            return f"[$text-muted]local priority: {gauges.plain(self._reason)}[/]"
        left = self.remaining()
        frac = left / self.window_s if self.window_s > 0 else 0.0
        bar = gauges.bar(frac, BAR_WIDTH, "$warning")
        if left > 0:
            note = (
                "[b $warning]↻ local request[/]"
                if self._reset_at is not None
                else "[$warning]Horde waits[/]"
            )
            return f"priority {bar} [b]{left:4.1f}s[/] {note}"
        return f"priority {bar} [b] 0.0s[/] [$success]Horde may take jobs[/]"
