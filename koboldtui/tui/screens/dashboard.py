"""The dashboard: GPUs, Horde, Instances, Batch and Queue on one keyboard-driven screen.

Bindings live here (not on the app) so they are inactive under modal forms; the actions
they name live on the app, which the command palette reaches too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input

from koboldtui.tui.backend import GpuReport, InstanceView
from koboldtui.tui.widgets.gpu_panel import GpuPanel
from koboldtui.tui.widgets.horde_panel import HordePanel
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from koboldtui.tui.widgets.queue_table import QueueTable

PANEL_IDS = ("gpus", "horde", "queue", "batch", "instances")

DASHBOARD_BINDINGS = [
    Binding("1", "focus_panel('gpus')", "GPUs", id="focus-gpus", show=False, tooltip="Focus the GPUs/VRAM panel"),
    Binding("2", "focus_panel('horde')", "Horde", id="focus-horde", show=False, tooltip="Focus the Horde panel"),
    Binding("3", "focus_panel('queue')", "Queue", id="focus-queue", show=False, tooltip="Focus the request queue"),
    Binding("4", "focus_panel('batch')", "Batch", id="focus-batch", show=False, tooltip="Focus the batch panel"),
    Binding("5", "focus_panel('instances')", "Instances", id="focus-instances", show=False,
            tooltip="Focus the instances table"),
    Binding("n", "app.new_instance", "New", id="new-instance", tooltip="Create a new instance"),
    Binding("e", "app.edit_instance", "Edit", id="edit-instance", show=False,
            tooltip="Edit the selected instance (restarts it if running)"),
    Binding("s", "app.start_instance", "Start", id="start-instance", tooltip="Start the selected instance"),
    Binding("x", "app.stop_instance", "Stop", id="stop-instance", tooltip="Stop the selected instance"),
    Binding("R", "app.restart_instance", "Restart", id="restart-instance", show=False,
            tooltip="Restart the selected instance"),
    Binding("m", "app.pick_model", "Model", id="switch-model", tooltip="Switch the selected instance to another model"),
    Binding("b", "app.batch_size", "Batch", id="batch-size", show=False,
            tooltip="Change the selected instance's batch size (reloads it)"),
    Binding("g", "app.gpu_priority", "GPUs", id="gpu-priority", tooltip="Order and enable GPUs"),
    Binding("p", "app.prompt", "Prompt", id="prompt", tooltip="Send a prompt to the selected instance"),
    Binding("l", "app.show_log", "Log", id="show-log", show=False, tooltip="Show the selected instance's log"),
    Binding("a,delete", "app.abort_request", "Abort", id="abort-request", show=False,
            tooltip="Abort the request selected in the queue"),
    Binding("slash", "filter_queue", "Filter", id="queue-filter", show=False,
            tooltip="Filter the queue by id, origin, instance or state (esc clears)"),
    Binding("w", "app.horde('start')", "Horde on", id="horde-start", show=False,
            tooltip="Start the selected instance's Horde worker"),
    Binding("W", "app.horde('stop')", "Horde off", id="horde-stop", show=False,
            tooltip="Stop the selected instance's Horde worker"),
    Binding("z", "app.horde('maintenance-on')", "Maintenance", id="horde-maintenance", show=False,
            tooltip="Put the Horde worker into maintenance"),
    Binding("Z", "app.horde('maintenance-off')", "Clear maint.", id="horde-maintenance-clear", show=False,
            tooltip="Take the Horde worker out of maintenance"),
    Binding("H", "app.horde_view", "Horde", id="horde-view", tooltip="Horde contribution: every worker, kudos and jobs over time"),
]


class DashboardScreen(Screen):
    """Live overview; redrawn from poll messages, never by polling itself."""

    BINDINGS: ClassVar[list[BindingType]] = list(DASHBOARD_BINDINGS)
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-narrow"), (100, "-wide")]

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
            with Horizontal(id="row-mid", classes="row"):
                yield InstancesTable(id="instances", classes="panel")
                yield BatchTable(id="batch", classes="panel")
            yield Input(placeholder="filter the queue: id, origin, instance or state · esc clears",
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

    def action_filter_queue(self) -> None:
        field = self.query_one("#queue-filter", Input)
        field.display = True
        field.focus()

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
        if isinstance(event.data_table, (InstancesTable, BatchTable)) and event.row_key.value:
            self.app.select_instance(event.row_key.value)  # type: ignore[attr-defined]
