"""The gateway screen (G) and the current-model picker (u, or m on the gateway's row).

The screen redraws from the app's gateway poll (a worker thread reads the gateway's status
JSON); it never asks the gateway itself. The picker lists the names the current model may
be (instances and pools, read from the store, so it works while the gateway is down) and
returns the chosen one; the app writes it through the same code as ``koboldtui gateway use``.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from koboldtui.tui import gauges
from koboldtui.tui.backend import GatewayReport
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.gateway_view import GatewayView


class GatewayScreen(PanelModal[str | None]):
    """Pools, instances, share per instance, affinity hits, starts, TTL stops, last errors.

    Returns "use" when the person asked to choose the current model (the app opens the picker).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,G", "close", "Close", id="gateway-view-close", tooltip="Back to the dashboard"),
        Binding("u", "use", "Current model", id="gateway-view-use",
                tooltip="Choose the box's current model (where KoboldAI routes go)"),
        Binding("c", "app.copy_gateway_url", "Copy URL", id="gateway-view-copy",
                tooltip="Copy the gateway's URL to the clipboard (OSC 52: works over SSH in most terminals)"),
    ]

    def __init__(self, report: GatewayReport | None) -> None:
        super().__init__(classes="modal")
        self.report = report

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full", id="gateway-dialog"):
            yield Static("[b]Gateway[/]  [$text-muted]u current model · c copy URL · esc close · "
                         "refreshed every few seconds[/]")
            with VerticalScroll(id="gateway-body"):
                yield GatewayView(id="gateway-view")

    def on_mount(self) -> None:
        self.query_one("#gateway-body").focus()
        self.show(self.report)

    def show(self, report: GatewayReport | None) -> None:
        """A new poll: redraw (the app calls this while the screen is open)."""
        self.report = report
        view = self.query_one(GatewayView)
        if report is None:
            view.update("[$text-muted]looking for the gateway…[/]")
        else:
            view.show_report(report)

    def action_use(self) -> None:
        self.dismiss("use")

    def action_close(self) -> None:
        self.dismiss(None)


class CurrentModelPicker(PanelModal[str | None]):
    """Pick the box's current model among its instances and pools; returns the name (None: esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="current-model-cancel")]

    def __init__(self, choices: tuple[tuple[str, str], ...], current: str | None) -> None:
        super().__init__(classes="modal")
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("[b]Current model[/] of the gateway (KoboldAI routes carry no model name: they go here)"
                         "\n[$text-muted]↑/↓ choose · enter use · esc cancel[/]")
            yield OptionList(id="current-models")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        for name, kind in self.choices:
            mark = "  [$accent](current)[/]" if name == self.current else ""
            options.add_option(Option(f"{gauges.plain(name)}  [$text-muted]{kind}[/]{mark}", id=name))
        names = [n for n, _ in self.choices]
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
