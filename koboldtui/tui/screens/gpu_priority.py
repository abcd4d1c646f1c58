"""GPU priority: order and enable GPUs with keys; every change is saved at once.

The order decides ``CUDA_VISIBLE_DEVICES`` for new instances, so the resulting value is
shown live: the person sees exactly what a child process will get.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import GpuReport, GpuView, PanelBackend
from koboldtui.tui.screens.modal import PanelModal


class GpuPriorityScreen(PanelModal[None]):
    """Move GPUs up/down, enable/disable; saved through the backend on each key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("shift+up,K", "move(-1)", "Move up", id="gpu-move-up"),
        Binding("shift+down,J", "move(1)", "Move down", id="gpu-move-down"),
        Binding("space", "toggle", "Enable/disable", id="gpu-toggle"),
        Binding("escape", "close", "Close", id="gpu-close"),
    ]

    def __init__(self, backend: PanelBackend, report: GpuReport) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.gpus: list[GpuView] = list(report.gpus)
        self.cuda_visible_devices = report.cuda_visible_devices
        self.reason = report.unavailable_reason
        self.saves = 0
        self._save_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(
                "[b]GPU priority[/]  [$text-muted]shift+↑/↓ (or K/J) move · space enable/disable · esc close[/]"
            )
            yield DataTable(id="gpu-order", cursor_type="row")
            yield Static("", id="cvd")
            yield Static("[$text-muted]Saved at once; running instances keep their GPUs until restarted.[/]")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "use", "GPU", "name", "VRAM", "uuid")
        self._redraw(0)
        table.focus()

    def _redraw(self, cursor: int) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for pos, g in enumerate(self.gpus, 1):
            table.add_row(
                str(pos),
                "on" if g.enabled else "[dim]off[/dim]",
                str(g.index),
                gauges.plain(g.name),
                f"{gauges.gib(g.mem_total_mib)} GiB",
                gauges.plain(g.uuid),
                key=g.uuid,
            )
        if self.gpus:
            table.move_cursor(row=max(0, min(cursor, len(self.gpus) - 1)))
        cvd = self.query_one("#cvd", Static)
        if not self.gpus:
            cvd.update(f"[$warning]No NVIDIA GPU — CPU only[/] ({gauges.plain(self.reason or 'NVML found no GPU')})")
        else:
            shown = self.cuda_visible_devices or "(empty: CPU only)"
            cvd.update(f"CUDA_VISIBLE_DEVICES=[b]{gauges.plain(shown)}[/]")

    def _cursor(self) -> int:
        return self.query_one(DataTable).cursor_row

    def action_move(self, delta: int) -> None:
        row = self._cursor()
        target = row + delta
        if not self.gpus or not 0 <= target < len(self.gpus):
            return
        self.gpus[row], self.gpus[target] = self.gpus[target], self.gpus[row]
        self._redraw(target)
        self._save_order()

    def action_toggle(self) -> None:
        if not self.gpus:
            return
        row = self._cursor()
        g = self.gpus[row]
        self.gpus[row] = GpuView(**{**g.__dict__, "enabled": not g.enabled})
        self._redraw(row)
        self._save_enabled(g.uuid, not g.enabled)

    @work(thread=True, group="gpu-save", exit_on_error=False)
    def _save_order(self) -> None:
        # Saves run one at a time and each reads the order when it runs, so after quick
        # moves the last save written is always the newest order.
        with self._save_lock:
            uuids = [g.uuid for g in self.gpus]
            self._save(lambda: self.backend.set_gpu_order(uuids))

    @work(thread=True, group="gpu-save", exit_on_error=False)
    def _save_enabled(self, uuid: str, enabled: bool) -> None:
        with self._save_lock:
            self._save(lambda: self.backend.set_gpu_enabled(uuid, enabled))

    def _save(self, call: Callable[[], str]) -> None:
        """Run one save; a failure is told to the person, never raised into the app."""
        try:
            cvd = call()
        except Exception as exc:  # noqa: BLE001 - e.g. a GPU that vanished since the screen opened
            self.app.call_from_thread(
                self.notify, f"could not save the GPU order: {gauges.plain(exc)}", severity="error")
            return
        self.from_thread(self._saved, cvd)

    def _saved(self, cvd: str) -> None:
        self.saves += 1
        self.cuda_visible_devices = cvd
        self._redraw(self._cursor())

    def action_close(self) -> None:
        self.dismiss(None)
