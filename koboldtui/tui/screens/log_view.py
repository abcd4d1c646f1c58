"""An instance's log, tailed while open: the first place to look when one fails."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Log, Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import PanelBackend


class LogScreen(ModalScreen[None]):
    """Last lines of an instance's log, refreshed every ``refresh_s`` (polls never overlap)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="log-close"),
        Binding("r", "reload", "Reload", id="log-reload"),
    ]

    def __init__(self, backend: PanelBackend, instance: str, refresh_s: float | None = 2.0) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.refresh_s = refresh_s
        self.lines: list[str] = []
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full"):
            yield Static(f"[b]Log[/] {gauges.plain(self.instance)}  [$text-muted]r reload · esc close[/]")
            yield Log(id="log", highlight=False)

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._fetch()

    @work(thread=True, exclusive=True, group="log-tail")
    def _fetch(self) -> None:
        try:
            lines = self.backend.log_tail(self.instance, 500)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            lines = [f"cannot read the log of {self.instance}: {exc}"]
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: list[str]) -> None:
        if lines != self.lines:
            self.lines = lines
            log = self.query_one(Log)
            log.clear()
            log.write_lines(lines)
        if self.refresh_s and self.is_attached:
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(self.refresh_s, self._fetch)

    def action_close(self) -> None:
        self.dismiss(None)
