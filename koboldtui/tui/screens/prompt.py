"""Send a local request to an instance and watch it stream (it restarts the Horde countdown)."""

from __future__ import annotations

import threading
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static, TextArea

from koboldtui.tui import gauges
from koboldtui.tui.backend import PanelBackend
from koboldtui.tui.screens.modal import PanelModal


class PromptScreen(PanelModal[None]):
    """A prompt line and the streamed answer; enter sends, esc closes (and stops streaming)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="prompt-close")]

    def __init__(self, backend: PanelBackend, instance: str, max_tokens: int = 200) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.max_tokens = max_tokens
        self.output = ""
        self.tokens = 0
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(f"[b]Prompt[/] → {gauges.plain(self.instance)}  [$text-muted]enter send · esc close[/]")
            yield Input(placeholder="Write a prompt and press enter", id="prompt-input")
            yield TextArea("", id="prompt-output", read_only=True, soft_wrap=True)
            yield Static("", id="prompt-status")

    def on_mount(self) -> None:
        self.query_one("#prompt-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            self.query_one("#prompt-status", Static).update("[$warning]type a prompt first[/]")
            return
        self.output, self.tokens = "", 0
        self.query_one("#prompt-output", TextArea).text = ""
        self.query_one("#prompt-status", Static).update("[$warning]streaming…[/]")
        self._stop.set()  # a stream still running for the previous prompt stops writing here
        self._stop = threading.Event()
        self._stream(prompt, self._stop)

    @work(thread=True, group="prompt-stream", exit_on_error=False)
    def _stream(self, prompt: str, stop: threading.Event) -> None:
        try:
            for token in self.backend.stream_prompt(self.instance, prompt, self.max_tokens):
                if stop.is_set():
                    return  # closing the generator closes the HTTP stream: the instance aborts
                self.from_thread(self._append, token, stop)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            if not stop.is_set():
                self.from_thread(self._finish, f"[$error]{gauges.plain(exc)}[/]")
            return
        if not stop.is_set():
            self.from_thread(self._finish, None)

    def _append(self, token: str, stop: threading.Event) -> None:
        if stop.is_set():  # a token of an earlier prompt, already queued: drop it
            return
        self.output += token
        self.tokens += 1
        area = self.query_one("#prompt-output", TextArea)
        area.insert(token, area.document.end)
        self.query_one("#prompt-status", Static).update(f"[$warning]streaming…[/] {self.tokens} tokens")

    def _finish(self, error: str | None) -> None:
        status = self.query_one("#prompt-status", Static)
        status.update(error if error else f"[$success]done[/] · {self.tokens} tokens")

    def action_close(self) -> None:
        self._stop.set()
        self.dismiss(None)
