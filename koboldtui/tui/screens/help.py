"""The help screen lists every key from the live bindings, so it can never go stale.

It also lists the keys Textual's widgets bring (Enter, Tab, arrows, Home/End, a dialog's
answers), which have no binding id, and wraps each description under its key so it reads
at 80 columns (an id column squeezed the words to 14 characters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import Static

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


# Keys of Textual's widgets: not remappable (no id), but a person needs them as much.
WIDGET_KEYS: tuple[HelpEntry, ...] = (
    HelpEntry("tab / shift+tab", "Next / previous panel on the dashboard; next / previous field in a form", "",
              "anywhere"),
    HelpEntry("↑ ↓ pgup pgdn", "Move in a table, list or log", "", "anywhere"),
    HelpEntry("home / end", "First / last row of a table (in a text field: its start / end)", "", "anywhere"),
    HelpEntry("enter", "On an instance row: its details. In a list: pick. In a dialog: the highlighted button",
              "", "anywhere"),
    HelpEntry("esc", "Close the dialog; nothing is lost (a prompt keeps generating, a switch goes on)", "",
              "anywhere"),
    HelpEntry("space", "Flip a switch, tick a GPU", "", "instance form"),
    HelpEntry("enter", "On kind or model: open the list; ↑ ↓ and enter choose", "", "instance form"),
    HelpEntry("tab / →", "In the model path field: complete the path", "", "instance form"),
    HelpEntry("ctrl+u", "In a text field: delete everything left of the cursor", "", "instance form"),
    HelpEntry("enter", "Send the prompt (from another field: back to the prompt)", "", "prompt"),
    HelpEntry("enter", "Apply the batch size (reloads the instance)", "", "batch size"),
    HelpEntry("↑ ↓ enter", "Choose a model; it is checked before the instance stops", "", "model picker"),
    HelpEntry("← → / tab", "Move between the answers", "", "questions"),
    HelpEntry("enter", "Give the highlighted answer (the safe one unless said otherwise)", "", "questions"),
)


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
    """Every key by where it works, what it does, and its id for ``[keymap]`` in config.toml."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close", id="help-close")]

    def __init__(self, entries: list[HelpEntry], config_file: str) -> None:
        super().__init__(classes="modal")
        self.entries = entries
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full"):
            yield Static("[b]Keys[/]  [$text-muted]↑ ↓ pgup pgdn scroll · esc closes · ctrl+p palette[/]")
            with VerticalScroll(id="help-body"):
                yield Static(self._keys(), id="help-keys")
            yield Static(
                f"[$text-muted]Remap a key in {escape(self.config_file)}: "
                "\\[keymap] then id = \"keys\" (the id is the grey word after a description)[/]"
            )

    def _keys(self) -> Group:
        """One short table per place: the key, then its description wrapped with its id at the end."""
        places: dict[str, list[HelpEntry]] = {}
        for entry in [*self.entries, *WIDGET_KEYS]:
            places.setdefault(entry.where, []).append(entry)
        parts: list[object] = []
        for where, entries in places.items():
            parts.append(Text(where, style="bold underline"))
            table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
            table.add_column("key", no_wrap=True, width=15, style="bold")
            table.add_column("what", ratio=1, overflow="fold")
            for e in entries:
                what = Text(e.description)
                if e.binding_id:
                    what.append(f"  {e.binding_id}", style="dim")
                table.add_row(e.keys, what)
            parts.append(table)
        return Group(*parts)

    def on_mount(self) -> None:
        self.query_one("#help-body", VerticalScroll).focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
