"""The GPUs/VRAM panel: a card per GPU, or a clear CPU-mode card when NVML has none.

VRAM is what decides whether a model fits, so it gets a bar, our share, and history;
"not available" readings show as n/a instead of failing the panel. The machine's CPU,
RAM and load sit under the cards: one compact line beside GPUs, full gauges in CPU mode.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import GpuReport, GpuView
from koboldtui.tui.keys import panel_bindings
from koboldtui.tui.widgets.history_spark import HistorySpark
from koboldtui.tui.widgets.system_gauges import SystemGauges

BAR_WIDTH = 20


def gpu_header(gpu: GpuView) -> str:
    """One line: index, name, temperature, power, utilisation."""
    power = (
        f"{gauges.maybe(gpu.power_w, '.0f')}/{gauges.maybe(gpu.power_limit_w, '.0f')} W"
        if gpu.power_limit_w is not None
        else f"{gauges.maybe(gpu.power_w, '.0f')} W"
    )
    temp = f"{gauges.maybe(gpu.temp_c, '.0f')}°C"
    util = f"util {gauges.maybe(gpu.util_pct, '3.0f')}%"
    off = " [$warning](disabled)[/]" if not gpu.enabled else ""
    return f"[b]{gpu.index}[/] {gauges.plain(gpu.name)}{off}  {temp}  {power}  {util}"


def gpu_vram_line(gpu: GpuView) -> str:
    """VRAM bar with used/total GiB and the part our instances hold."""
    frac = gpu.mem_fraction
    fill = gauges.load_variable(frac)
    return (
        f"VRAM {gauges.bar(frac, BAR_WIDTH, fill)} "
        f"{gauges.gib(gpu.mem_used_mib)}/{gauges.gib(gpu.mem_total_mib)} GiB"
        f"  [$text-muted]ours {gauges.gib(gpu.ours_mib)}[/]"
    )


class GpuCard(Vertical):
    """One GPU: header, VRAM bar, and sparklines of VRAM and utilisation history (0..100 %)."""

    DEFAULT_CSS = """
    GpuCard { height: auto; }
    GpuCard .gpu-sparks { height: 1; }
    GpuCard .spark-label { width: 5; color: $text-muted; }
    GpuCard HistorySpark { width: 1fr; height: 1; margin-right: 1; }
    """

    def __init__(self, gpu: GpuView) -> None:
        super().__init__(classes="gpu-card")
        self.gpu = gpu

    def compose(self) -> ComposeResult:
        yield Static(gpu_header(self.gpu), classes="gpu-header")
        yield Static(gpu_vram_line(self.gpu), classes="gpu-vram")
        with Horizontal(classes="gpu-sparks"):
            yield Static("vram", classes="spark-label")
            yield HistorySpark(self.gpu.vram_history, 100.0, classes="vram-spark")
            yield Static("util", classes="spark-label")
            yield HistorySpark(self.gpu.util_history, 100.0, classes="util-spark")

    def update_gpu(self, gpu: GpuView) -> None:
        """Redraw in place with a new reading (no remount, no flicker)."""
        self.gpu = gpu
        self.query_one(".gpu-header", Static).update(gpu_header(gpu))
        self.query_one(".gpu-vram", Static).update(gpu_vram_line(gpu))
        self.query_one(".vram-spark", HistorySpark).data = gpu.vram_history
        self.query_one(".util-spark", HistorySpark).data = gpu.util_history


class GpuPanel(Vertical, can_focus=True):
    """All GPUs in priority order plus the CUDA_VISIBLE_DEVICES new instances get."""

    BINDINGS: ClassVar[list[BindingType]] = panel_bindings("gpus")

    BORDER_TITLE = "GPUs / VRAM · system"
    DEFAULT_CSS = """
    GpuPanel #gpu-cards { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._uuids: tuple[str, ...] | None = None
        self._cpu_reason: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="gpu-cards"):
            yield Static("[$text-muted]reading GPUs…[/]", id="gpu-waiting")
        yield SystemGauges(id="system")

    def show_report(self, report: GpuReport) -> None:
        """Draw a new GPU report, remounting cards only when the set of GPUs changed."""
        # beside GPUs one compact line, unless the right-hand column of a wide screen has room
        compact = bool(report.gpus) and not self.screen.has_class("-xwide")
        self.query_one(SystemGauges).show(report.machine, compact=compact)
        uuids = tuple(g.uuid for g in report.gpus)
        cards = self.query_one("#gpu-cards", Vertical)
        if not report.gpus:
            reason = report.unavailable_reason or "NVML found no GPU"
            if self._uuids == () and self._cpu_reason == reason:
                return
            self._uuids, self._cpu_reason = (), reason
            cards.remove_children()
            cards.mount(
                Static(
                    f"[b $warning]No NVIDIA GPU — running on CPU:[/] [$text-muted]{gauges.plain(reason)}[/]",
                    id="no-gpu",
                )
            )
            self.border_subtitle = "CPU mode"
            return
        if uuids != self._uuids:
            self._uuids, self._cpu_reason = uuids, None
            cards.remove_children()
            cards.mount_all([GpuCard(g) for g in report.gpus])
        else:
            for card, gpu in zip(cards.query(GpuCard), report.gpus):
                card.update_gpu(gpu)
        order = " ".join(str(g.index) for g in report.gpus if g.enabled) or "none (CPU)"
        self.border_subtitle = f"new instances use GPUs {order}"
