"""Model switch progress: stop → start → loading → ready, step by step with a bar."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import PanelBackend
from koboldtui.tui.screens.modal import PanelModal


class SwitchProgressScreen(PanelModal[bool]):
    """Runs the switch in a worker; True when the instance came back ready."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close (the switch goes on)", id="switch-close")]

    def __init__(self, backend: PanelBackend, instance: str, model: str) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.model = model
        self.steps: list[str] = []
        self.finished: bool | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"[b]Switching[/] {gauges.plain(self.instance)} → {gauges.plain(self.model.rsplit('/', 1)[-1])}"
            )
            yield ProgressBar(total=1.0, show_eta=False, id="switch-bar")
            yield Static("", id="switch-steps")

    def on_mount(self) -> None:
        self._run()

    @work(thread=True, exclusive=True, group="switch-model", exit_on_error=False)
    def _run(self) -> None:
        try:
            self.backend.switch_model(
                self.instance, self.model, lambda step, frac: self.from_thread(self._progress, step, frac)
            )
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            self.from_thread(self._done, str(exc))
            return
        self.from_thread(self._done, None)

    def _progress(self, step: str, fraction: float) -> None:
        self.steps.append(step)
        self.query_one(ProgressBar).update(progress=fraction)
        self.query_one("#switch-steps", Static).update("\n".join(gauges.plain(s) for s in self.steps[-6:]))

    def _done(self, error: str | None) -> None:
        self.finished = error is None
        if error is None:
            self.query_one(ProgressBar).update(progress=1.0)
            self.notify(f"{self.instance} now runs {self.model.rsplit('/', 1)[-1]}", title="Model switched")
            self.dismiss(True)
            return
        self.steps.append(f"failed: {error}")
        self.query_one("#switch-steps", Static).update(
            "\n".join(gauges.plain(s) for s in self.steps[-6:]) + "\n[$text-muted]esc closes[/]"
        )
        self.query_one("#switch-steps", Static).add_class("error")

    def action_close(self) -> None:
        """Close at any time; a switch still running goes on and the dashboard shows its state."""
        if self.finished is None:
            self.notify(f"{self.instance}: the switch goes on in the background", timeout=5)
        self.dismiss(bool(self.finished))
