"""A yes/no question with a default, so destructive steps are never one stray key away."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from koboldtui.tui.screens.modal import PanelModal


class ConfirmScreen(PanelModal[bool | None]):
    """Answers True (yes), False (no) or None (escape: cancel)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n", "answer(False)", "No", id="confirm-no"),
        Binding("escape", "answer(None)", "Cancel", id="confirm-cancel"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No", default_yes: bool = True) -> None:
        super().__init__(classes="modal")
        self.question, self.yes, self.no, self.default_yes = question, yes, no, default_yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="primary" if self.default_yes else "default")
                yield Button(f"{self.no} (n)", id="no", variant="default" if self.default_yes else "primary")
            yield Static("[$text-muted]enter: the highlighted answer · esc: cancel[/]")

    def on_mount(self) -> None:
        self.query_one("#yes" if self.default_yes else "#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool | None) -> None:
        self.dismiss(answer)
