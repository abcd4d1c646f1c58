"""The dashboard: GPUs, Horde, Instances, Batch and Queue on one keyboard-driven screen.

Three layouts by width (classes from ``HORIZONTAL_BREAKPOINTS``, rules in app.tcss): below
120 columns every panel is full width and the screen scrolls; from 120 panels sit in
pairs; from 160 the GPU/system and Horde cards form a right-hand column beside the
instances and the queue, so a wide terminal shows more columns instead of empty space.

Bindings (defined in keys.py) live here, not on the app, so they are inactive under modal forms; the actions
they name live on the app, which the command palette reaches too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input

from koboldtui.tui.backend import GatewayReport, GpuReport, InstanceView
from koboldtui.tui.keys import DASHBOARD_BINDINGS
from koboldtui.tui.widgets.gateway_view import GatewayLine
from koboldtui.tui.widgets.gpu_panel import GpuPanel
from koboldtui.tui.widgets.horde_panel import HordePanel
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from koboldtui.tui.widgets.queue_table import QueueTable
from koboldtui.tui.widgets.text_field import TextField

PANEL_IDS = ("gpus", "horde", "queue", "batch", "instances")




class DashboardScreen(Screen):
    """Live overview; redrawn from poll messages, never by polling itself."""

    BINDINGS: ClassVar[list[BindingType]] = list(DASHBOARD_BINDINGS)
    # side by side only from 120 columns: between 100 and 119 uptime and slots clipped;
    # from 160 the GPUs/system and Horde cards move to a column on the right (app.tcss)
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"), (120, "-wide"), (160, "-xwide")]

    def __init__(self, clock: Callable[[], float], tick_s: float | None, fade_after_s: float,
                 screen_id: str = "dashboard") -> None:
        super().__init__(id=screen_id)
        self._clock = clock
        self._tick_s = tick_s
        self._fade_after_s = fade_after_s
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with VerticalScroll(id="dash"):
            with Horizontal(id="row-top", classes="row"):
                yield GpuPanel(id="gpus", classes="panel")
                yield HordePanel(self._clock, self._tick_s, id="horde", classes="panel")
            yield GatewayLine(id="gateway-line")
            with Horizontal(id="row-mid", classes="row"):
                yield InstancesTable(id="instances", classes="panel")
                yield BatchTable(id="batch", classes="panel")
            yield TextField(placeholder="filter the queue: id, origin, instance or state · esc clears",
                        id="queue-filter")
            yield QueueTable(self._fade_after_s, id="queue", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#queue-filter", Input).display = False
        self._ready = True
        self.query_one(InstancesTable).focus(scroll_visible=False)  # start at the top: GPUs first
        app = self.app
        if getattr(app, "polls_done", 0):  # a poll landed before the widgets existed
            self.show_instances(app.instances, app.selected_instance, app.clock())  # type: ignore[attr-defined]
        if getattr(app, "gpu_polls_done", 0):
            self.show_gpus(app.gpu_report)  # type: ignore[attr-defined]
        self.show_gateway(getattr(app, "gateway_report", None))

    def on_resize(self) -> None:
        """A new width may mean another layout: redraw the GPU panel in its form for it."""
        if self._ready and getattr(self.app, "gpu_polls_done", 0):
            self.call_after_refresh(self.show_gpus, self.app.gpu_report)  # type: ignore[attr-defined]

    def action_filter_queue(self) -> None:
        field = self.query_one("#queue-filter", Input)
        field.display = True
        field.focus()
        # shown just now: scroll once it has a place (at 80x24 it is below the fold)
        self.call_after_refresh(field.scroll_visible, animate=False)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "queue-filter":
            self.query_one(QueueTable).set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "queue-filter":
            self.query_one(QueueTable).focus()

    def key_escape(self) -> None:
        """Escape on the dashboard clears the queue filter (it has nothing else to close)."""
        field = self.query_one("#queue-filter", Input)
        if field.display:
            field.value = ""
            field.display = False
            self.query_one(QueueTable).set_filter("")
            self.query_one(QueueTable).focus()

    def action_focus_panel(self, panel_id: str) -> None:
        widget = self.query_one(f"#{panel_id}")
        widget.focus()
        widget.scroll_visible(animate=False)

    def show_instances(self, instances: tuple[InstanceView, ...], selected: str | None, polled_at: float) -> None:
        """Redraw every instance-driven panel from one poll."""
        if not self._ready:
            return
        try:
            self.query_one(InstancesTable).show(instances)
            self.query_one(BatchTable).show(instances)
            self.query_one(QueueTable).show(instances, polled_at)
            chosen = next((i for i in instances if i.name == selected), instances[0] if instances else None)
            self.query_one(HordePanel).show_instance(chosen, polled_at)
        except NoMatches:  # a poll landing while the app tears the screen down: nothing to draw
            return

    def show_gateway(self, report: GatewayReport | None) -> None:
        """The gateway row: URL, answering or not, current model."""
        if not self._ready:
            return
        try:
            self.query_one(GatewayLine).show(report)
        except NoMatches:  # torn down while the poll ran
            return

    def show_gpus(self, report: GpuReport) -> None:
        if not self._ready:
            return
        try:
            self.query_one(GpuPanel).show_report(report)
        except NoMatches:  # torn down while the poll ran
            return

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an instance opens its details (why it failed, its settings, its log)."""
        if isinstance(event.data_table, InstancesTable) and event.row_key.value:
            self.app.select_instance(event.row_key.value)  # type: ignore[attr-defined]
            self.app.action_instance_detail()  # type: ignore[attr-defined]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The instances (or batch) cursor picks the instance every key acts on."""
        if isinstance(event.data_table, (InstancesTable, BatchTable)) and event.row_key.value \
                and event.data_table.selected_key == event.row_key.value:  # a stale highlight must not undo a newer pick
            self.app.select_instance(event.row_key.value)  # type: ignore[attr-defined]
