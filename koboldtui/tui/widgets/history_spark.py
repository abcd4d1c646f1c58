"""A sparkline on a fixed scale (0..100 %, 0..cores): the height of a bar means the same every poll.

Textual's ``Sparkline`` stretches each history between its own minimum and maximum, so
RAM flat at 7 % draws as full bars. Gauges need the absolute reading, as btop draws
them; this one takes ``top`` (the value of a full bar) and shows the newest samples at
the right, one per cell, over as many lines as it is tall.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"  # 0..8 eighths of a cell


def spark_lines(values: Sequence[float], width: int, height: int, top: float) -> list[str]:
    """The last ``width`` values as ``height`` lines of block characters, top line first."""
    if width <= 0 or height <= 0:
        return []
    shown = list(values)[-width:]
    eighths = [round(min(1.0, max(0.0, v / top)) * height * 8) if top > 0 else 0 for v in shown]
    # a reading above zero shows at least a sliver: "idle" and "nothing measured" must differ
    eighths = [max(e, 1) if v > 0 else e for e, v in zip(eighths, shown)]
    pad = " " * (width - len(shown))
    lines = []
    for row in range(height - 1, -1, -1):
        cells = "".join(BLOCKS[min(8, max(0, e - row * 8))] for e in eighths)
        lines.append(pad + cells)
    return lines


class HistorySpark(Widget):
    """The recent history of one gauge, newest at the right, scaled so ``top`` fills a cell."""

    DEFAULT_CSS = """
    HistorySpark { width: 1fr; height: 1; color: $accent; }
    """

    data: reactive[tuple[float, ...]] = reactive(tuple, layout=False)
    top: reactive[float] = reactive(100.0)

    def __init__(self, data: Sequence[float] = (), top: float = 100.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_reactive(HistorySpark.data, tuple(data))
        self.set_reactive(HistorySpark.top, top)

    def render(self) -> Text:
        lines = spark_lines(self.data, self.size.width, self.size.height, self.top)
        return Text("\n".join(lines), no_wrap=True, overflow="crop")
