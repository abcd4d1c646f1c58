"""Small pickers: a model from the catalogue, and a new batch size with its n_ubatch."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from koboldtui.tui import gauges
from koboldtui.tui.backend import CatalogModel, PanelBackend
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.text_field import TextField

MAX_UBATCH = 1024


class ModelPickerScreen(PanelModal[str | None]):
    """Pick a GGUF from the catalogue; returns its path (or None on escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="picker-cancel")]

    def __init__(self, backend: PanelBackend, instance: str, current: str) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.current = current
        self.models: list[CatalogModel] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"[b]Switch model[/] of {gauges.plain(self.instance)}"
                "  [$text-muted]↑/↓ choose · enter switch · esc cancel[/]"
            )
            yield OptionList(id="models")
            yield Static("[$text-muted]loading the catalogue…[/]", id="picker-status")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        cached = getattr(self.app, "catalog_models", None)
        if cached is not None:  # the app keeps the catalogue fresh in a worker: open at once
            self._fill(list(cached))
        else:
            self._load()

    @work(thread=True, exclusive=True, group="picker-catalog", exit_on_error=False)
    def _load(self) -> None:
        try:
            models = self.backend.catalog()
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            self.from_thread(self._status, f"[$error]cannot list models: {gauges.plain(exc)}[/]")
            return
        self.from_thread(self._fill, models)

    def _status(self, text: str) -> None:
        self.query_one("#picker-status", Static).update(text)

    def _fill(self, models: list[CatalogModel]) -> None:
        self.models = models
        options = self.query_one(OptionList)
        options.clear_options()
        usable = [m for m in models if m.error is None]
        broken = [m for m in models if m.error is not None]
        for m in usable:
            mark = " [$accent](current)[/]" if m.path == self.current or m.name == self.current else ""
            size = f"{m.size_bytes / 2**30:.1f} GiB" if m.size_bytes else ""
            options.add_option(Option(f"{gauges.plain(m.name)}  [$text-muted]{size} {gauges.plain(m.quant)}[/]{mark}", id=m.path))
        for m in broken:  # listed with the reason, never pickable
            options.add_option(Option(f"[$error]✗ {gauges.plain(m.name)}[/]  [$text-muted]{gauges.plain(m.error)}[/]",
                                      id=f"broken:{m.path}", disabled=True))
        note = f" · {len(broken)} broken (cannot be read)" if broken else ""
        self._status(f"{len(usable)} models{note}" if usable
                     else "[$warning]no GGUF models found: put GGUFs in the models folder or `koboldtui models add-dir PATH`[/]")
        if usable:
            options.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class BatchFormScreen(PanelModal[int | None]):
    """Enter a new n_batch; shows n_ubatch = min(n_batch, 1024) as you type."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="batch-cancel")]

    def __init__(self, instance: str, n_batch: int) -> None:
        super().__init__(classes="modal")
        self.instance = instance
        self.n_batch = n_batch

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"[b]Batch size[/] of {gauges.plain(self.instance)}"
                "  [$text-muted]enter apply (reloads the instance) · esc cancel[/]"
            )
            yield TextField(str(self.n_batch), id="n_batch", type="integer")
            yield Static("", id="batch-msg")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._explain(str(self.n_batch))

    def _parse(self, text: str) -> tuple[int | None, str]:
        try:
            value = int(text.strip())
        except ValueError:
            return None, "[$error]n_batch must be a whole number[/]"
        if not 1 <= value <= 65536:
            return None, "[$error]n_batch must be between 1 and 65536[/]"
        return value, f"n_ubatch = min({value}, {MAX_UBATCH}) = [b]{min(value, MAX_UBATCH)}[/]"

    def _explain(self, text: str) -> None:
        self.query_one("#batch-msg", Static).update(self._parse(text)[1])

    def on_input_changed(self, event: Input.Changed) -> None:
        self._explain(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value, _ = self._parse(event.value)
        if value is not None:
            self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
