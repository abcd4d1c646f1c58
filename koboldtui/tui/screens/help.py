"""The help screen lists every key from the live bindings, so it can never go stale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.markup import escape
from textual.widgets import DataTable, Static

from koboldtui.tui.screens.modal import PanelModal


@dataclass(frozen=True)
class HelpEntry:
    """One key as the user has it (after keymap overrides)."""

    keys: str
    description: str
    binding_id: str
    where: str


KEY_NAMES = {"question_mark": "?", "escape": "esc", "space": "space", "delete": "del"}


def key_label(keys: str) -> str:
    """'question_mark,f1' → '? / f1'."""
    return " / ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def help_entries(groups: list[tuple[str, list[Binding]]], keymap: dict[str, str]) -> list[HelpEntry]:
    """Entries for every binding with an id, keys taken from the keymap when remapped."""
    entries = []
    for where, bindings in groups:
        for b in bindings:
            if not b.id:
                continue
            keys = keymap.get(b.id, b.key)
            entries.append(HelpEntry(key_label(keys), b.tooltip or b.description, b.id, where))
    return entries


class HelpScreen(PanelModal[None]):
    """Every key, what it does, and its id for ``[keymap]`` in config.toml."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close", id="help-close")]

    def __init__(self, entries: list[HelpEntry], config_file: str) -> None:
        super().__init__(classes="modal")
        self.entries = entries
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full"):
            yield Static("[b]Keys[/]  [$text-muted](esc closes · ctrl+p opens the command palette)[/]")
            yield DataTable(id="help-table", cursor_type="row")
            yield Static(
                f"[$text-muted]Remap any key in {escape(self.config_file)}: "
                "\\[keymap] then id = \"keys\"[/]"
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "id", "where", "what it does")
        for e in self.entries:
            table.add_row(escape(e.keys), e.binding_id, e.where, escape(e.description))
        table.focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
