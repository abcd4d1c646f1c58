"""An instance's log, tailed while open: the first place to look when one fails.

Lines wrap (the error is never off-screen to the right), the view follows new lines
until the person scrolls or presses ``f``, ``/`` narrows it to the lines that match, and
warnings and errors stand out in the theme's colours.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Input, RichLog, Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import PanelBackend
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.text_field import TextField

ERROR_MARKS = ("error", "traceback", "exception", "failed", "fatal", "critical")
WARNING_MARKS = ("warning", "warn ", "[warn", "deprecat")


def line_level(line: str) -> str | None:
    """'error', 'warning' or None: how a log line should stand out."""
    low = line.lower()
    if any(mark in low for mark in ERROR_MARKS):
        return "error"
    if any(mark in low for mark in WARNING_MARKS):
        return "warning"
    return None


def matching(lines: list[str], query: str) -> list[str]:
    """The lines that contain ``query`` (case-insensitive); all lines for an empty query."""
    q = query.strip().lower()
    return [line for line in lines if q in line.lower()] if q else list(lines)


class LogScreen(PanelModal[None]):
    """Last lines of an instance's log, refreshed every ``refresh_s`` (polls never overlap)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="log-close", tooltip="Close the log (or clear the search)"),
        Binding("r", "reload", "Reload", id="log-reload", tooltip="Read the log again now"),
        Binding("slash", "search", "Search", id="log-search", tooltip="Show only the lines that contain a text"),
        Binding("f", "follow", "Follow", id="log-follow", tooltip="Follow new lines (on/off)"),
    ]

    def __init__(self, backend: PanelBackend, instance: str, refresh_s: float | None = 2.0) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.refresh_s = refresh_s
        self.lines: list[str] = []
        self.shown: list[str] = []
        self.query_text = ""
        self.following = True
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full"):
            yield Static("", id="log-title")
            yield RichLog(id="log", wrap=True, markup=False, highlight=False, auto_scroll=True)
            yield TextField(placeholder="search: type to narrow, enter keeps it, esc clears", id="log-query")

    def on_mount(self) -> None:
        self.query_one("#log-query", Input).display = False
        self._title()
        self.action_reload()

    def _title(self) -> None:
        follow = "[$success]following[/]" if self.following else "[$warning]paused[/] (f follows)"
        match = f" · [b]{len(self.shown)}[/] of {len(self.lines)} lines match {gauges.plain(repr(self.query_text))}" \
            if self.query_text else f" · {len(self.lines)} lines"
        self.query_one("#log-title", Static).update(
            f"[b]Log[/] {gauges.plain(self.instance)}{match} · {follow}"
            "  [$text-muted]/ search · f follow · r reload · esc close[/]"
        )

    def action_reload(self) -> None:
        self._fetch()

    @work(thread=True, exclusive=True, group="log-tail", exit_on_error=False)
    def _fetch(self) -> None:
        try:
            lines = self.backend.log_tail(self.instance, 500)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            lines = [f"cannot read the log of {self.instance}: {exc}"]
        self.from_thread(self._show, lines)

    def _style(self, level: str | None) -> Style | None:
        if level is None:
            return None
        variables = self.app.theme_variables
        colour = variables.get(level) or variables.get("accent")
        return Style(color=colour, bold=level == "error")

    def _redraw(self) -> None:
        log = self.query_one(RichLog)
        self.shown = matching(self.lines, self.query_text)
        log.clear()
        query = self.query_text.strip()
        for line in self.shown:
            text = Text(line, style=self._style(line_level(line)) or "")
            if query:
                text.highlight_words([query], style="reverse", case_sensitive=False)
            log.write(text, scroll_end=self.following)
        if self.following:
            log.scroll_end(animate=False)
        self._title()

    def _show(self, lines: list[str]) -> None:
        if not self.is_attached:
            return
        if lines != self.lines:
            self.lines = lines
            self._redraw()
        if self.refresh_s:
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(self.refresh_s, self._fetch)

    def action_follow(self) -> None:
        self.following = not self.following
        self.query_one(RichLog).auto_scroll = self.following
        if self.following:
            self.query_one(RichLog).scroll_end(animate=False)
        self._title()

    def action_search(self) -> None:
        field = self.query_one("#log-query", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#log-query")
    def _query_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._redraw()

    @on(Input.Submitted, "#log-query")
    def _query_kept(self) -> None:
        self.query_one(RichLog).focus()

    def action_close(self) -> None:
        field = self.query_one("#log-query", Input)
        if field.display and (field.has_focus or self.query_text):
            field.value = ""
            field.display = False
            self.query_text = ""
            self._redraw()
            self.query_one(RichLog).focus()
            return
        self.dismiss(None)
