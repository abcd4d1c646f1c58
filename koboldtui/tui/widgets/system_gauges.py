"""CPU %, RAM and load average with a minute of sparkline each: the machine at a glance.

Without a GPU these decide how fast a model runs, so CPU mode shows them as three full
gauges; with GPUs they shrink to one compact line under the GPU cards (as btop does).
"""

from __future__ import annotations

from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from koboldtui.system.machine import MachineReport
from koboldtui.tui import gauges
from koboldtui.tui.widgets.history_spark import HistorySpark

BAR_WIDTH = 12
GIB = 1024**3


def cpu_words(m: MachineReport) -> str:
    """'34.5% of 16 cores' (n/a on the first reading: CPU % needs two)."""
    return f"{gauges.maybe(m.cpu_pct, '5.1f')}% of {m.cpu_count} cores"


def ram_words(m: MachineReport) -> str:
    """'20.0/64.0 GiB': what programs hold (page cache counts as free) of all RAM."""
    return f"{m.mem_used_bytes / GIB:.1f}/{m.mem_total_bytes / GIB:.1f} GiB"


def load_words(m: MachineReport) -> str:
    """'5.42 4.87 3.90' (1, 5 and 15 minutes), or n/a where the OS keeps none."""
    return " ".join(f"{x:.2f}" for x in m.load) if m.load else "n/a"


def full_lines(m: MachineReport) -> tuple[str, str, str]:
    """The three CPU-mode gauges: a bar (coloured by load) and the numbers."""
    cpu = (m.cpu_pct or 0.0) / 100
    return (
        f"cpu  {gauges.bar(cpu, BAR_WIDTH, gauges.load_variable(cpu))} {cpu_words(m)}",
        f"ram  {gauges.bar(m.mem_fraction, BAR_WIDTH, gauges.load_variable(m.mem_fraction))} {ram_words(m)}",
        f"load {gauges.bar(m.load_fraction, BAR_WIDTH, gauges.load_variable(m.load_fraction))} {load_words(m)}",
    )


def compact_words(m: MachineReport) -> tuple[str, str, str]:
    """The one-line form's labels: 'cpu 35%', 'ram 20/64G', 'load 5.4'."""
    return (
        f"cpu {gauges.maybe(m.cpu_pct, '3.0f')}%",
        f"ram {m.mem_used_bytes / GIB:.0f}/{m.mem_total_bytes / GIB:.0f}G",
        f"load {m.load[0]:.1f}" if m.load else "load n/a",
    )


def scales(m: MachineReport) -> tuple[float, float, float]:
    """What a full bar means: 100 % CPU, 100 % RAM, a load of one per core (or the peak above it)."""
    return 100.0, 100.0, max([float(m.cpu_count), *m.load_history])


class SystemGauges(Vertical):
    """The machine's gauges, full (three rows) or compact (one row); redrawn in place each poll."""

    DEFAULT_CSS = """
    SystemGauges { height: auto; }
    SystemGauges .sys-row { height: 1; }
    SystemGauges .sys-full { width: 37; }
    SystemGauges .sys-compact { width: auto; margin-right: 1; color: $text-muted; }
    SystemGauges HistorySpark { width: 1fr; height: 1; margin-right: 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._compact: bool | None = None
        self._words: tuple[str, ...] = ()
        self.report: MachineReport | None = None

    def show(self, report: MachineReport | None, compact: bool) -> None:
        """Draw a new reading; the rows are remounted only when the form changes."""
        self.report = report
        self.display = report is not None
        if report is None:
            return
        words = compact_words(report) if compact else full_lines(report)
        histories = (report.cpu_history, report.mem_history, report.load_history)
        tops = scales(report)
        if compact != self._compact:
            self._compact = compact
            self.remove_children()
            self.mount_all(self._rows(words, histories, tops, compact))
            self._words = words
            return
        for label, text, before in zip(self.query(".sys-label").results(Static), words, self._words):
            if text != before:  # full labels have a fixed width: repaint only, no layout pass
                label.update(text, layout=compact and len(text) != len(before))
        self._words = words
        for spark, data, top in zip(self.query(HistorySpark).results(HistorySpark), histories, tops):
            spark.top, spark.data = top, data

    @staticmethod
    def _rows(words: tuple[str, ...], histories: tuple[tuple[float, ...], ...], tops: tuple[float, ...],
              compact: bool) -> list[Horizontal]:
        names = ("cpu", "ram", "load")
        if compact:
            cells: list[Static | HistorySpark] = []
            for name, text, data, top in zip(names, words, histories, tops):
                cells += [Static(text, classes="sys-label sys-compact"),
                          HistorySpark(data, top, classes=f"{name}-spark")]
            return [Horizontal(*cells, classes="sys-row")]
        return [
            Horizontal(Static(text, classes="sys-label sys-full"), HistorySpark(data, top, classes=f"{name}-spark"),
                       classes="sys-row")
            for name, text, data, top in zip(names, words, histories, tops)
        ]
