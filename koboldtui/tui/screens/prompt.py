"""Send a local request to an instance and watch it stream (it restarts the Horde countdown).

Max tokens and temperature are set next to the prompt; the status line shows the time to
first token and the tokens per second, so the box doubles as a quick speed check.

Esc never throws work away: it closes the box and the generation goes on (it stays in the
queue, where ``a`` aborts it; a note says when it ends). Sending another prompt from the
box replaces the one streaming there, which is said in the status line.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static, TextArea

from koboldtui.tui import gauges
from koboldtui.tui.backend import PanelBackend
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.text_field import TextField


class PromptScreen(PanelModal[None]):
    """A prompt line and the streamed answer; enter sends, esc closes (the generation goes on)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="prompt-close")]

    def __init__(self, backend: PanelBackend, instance: str, max_tokens: int = 200) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.instance = instance
        self.max_tokens = max_tokens
        self.temperature: float | None = None
        self.output = ""
        self.tokens = 0
        self.sent_at = 0.0
        self.ttft_s: float | None = None
        self._stop = threading.Event()
        self._box_closed = threading.Event()  # esc: tokens are no longer shown, the request runs on
        self.streaming = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(f"[b]Prompt[/] → {gauges.plain(self.instance)}  "
                         "[$text-muted]enter send · tab next field · esc close (a generation goes on)[/]")
            yield TextField(placeholder="Write a prompt and press enter", id="prompt-input")
            with Horizontal(classes="form-row prompt-settings"):
                yield Label("max tokens")
                yield TextField(str(self.max_tokens), id="prompt-max", type="integer")
                yield Label("temperature")
                yield TextField("", id="prompt-temp", placeholder="instance default")
            yield TextArea("", id="prompt-output", read_only=True, soft_wrap=True)
            yield Static("", id="prompt-status")

    def on_mount(self) -> None:
        self.panel = self.app  # kept: a stream that outlives the box still reports to the app
        self.query_one("#prompt-input", Input).focus()

    def _settings(self) -> tuple[int, float | None] | str:
        """(max tokens, temperature or None) from the fields, or what is wrong with them."""
        try:
            max_tokens = int(self.query_one("#prompt-max", Input).value.strip())
        except ValueError:
            return "max tokens must be a whole number"
        if not 1 <= max_tokens <= 4096:
            return "max tokens must be between 1 and 4096"
        text = self.query_one("#prompt-temp", Input).value.strip()
        if not text:
            return max_tokens, None
        try:
            temperature = float(text)
        except ValueError:
            return "temperature must be a number like 0.7 (blank: the instance's default)"
        if not 0.0 <= temperature <= 5.0:
            return "temperature must be between 0 and 5"
        return max_tokens, temperature

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt-input":
            self.query_one("#prompt-input", Input).focus()
            return
        prompt = event.value.strip()
        if not prompt:
            self.query_one("#prompt-status", Static).update("[$warning]type a prompt first[/]")
            return
        settings = self._settings()
        if isinstance(settings, str):
            self.query_one("#prompt-status", Static).update(f"[$error]{gauges.plain(settings)}[/]")
            return
        self.max_tokens, self.temperature = settings
        self.output, self.tokens, self.ttft_s = "", 0, None
        self.sent_at = time.monotonic()
        self.query_one("#prompt-output", TextArea).text = ""
        replaced = " (the previous one was aborted)" if self.streaming else ""
        self.query_one("#prompt-status", Static).update(f"[$warning]streaming…[/]{replaced}")
        self._stop.set()  # a stream still running for the previous prompt is aborted
        self._stop = threading.Event()
        self.streaming = True
        self._stream(prompt, self._stop)

    @work(thread=True, group="prompt-stream", exit_on_error=False)
    def _stream(self, prompt: str, stop: threading.Event) -> None:
        tokens = 0
        try:
            for token in self.backend.stream_prompt(self.instance, prompt, self.max_tokens,
                                                    temperature=self.temperature):
                if stop.is_set():
                    return  # replaced by a newer prompt: closing the generator aborts this one
                tokens += 1
                if not self._box_closed.is_set():
                    self.from_thread(self._append, token, stop)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            if not stop.is_set():
                self.from_thread(self._finish, f"[$error]{gauges.plain(exc)}[/]")
                self._closed_note(f"the prompt to {self.instance} failed: {exc}", "error")
            return
        if not stop.is_set():
            self.from_thread(self._finish, None)
            self._closed_note(f"the prompt to {self.instance} finished: {tokens} tokens", "information")

    def _closed_note(self, text: str, severity: str) -> None:
        """After esc the box is gone: a short note tells how the generation ended."""
        if not self._box_closed.is_set():
            return
        try:
            self.panel.call_from_thread(self.panel.notify, text, title="Prompt", severity=severity, markup=False)
        except RuntimeError:  # the app has shut down
            pass

    def _append(self, token: str, stop: threading.Event) -> None:
        if stop.is_set():  # a token of an earlier prompt, already queued: drop it
            return
        if self.ttft_s is None:
            self.ttft_s = time.monotonic() - self.sent_at
        self.output += token
        self.tokens += 1
        area = self.query_one("#prompt-output", TextArea)
        area.insert(token, area.document.end)
        self.query_one("#prompt-status", Static).update(f"[$warning]streaming…[/] {self.speed_words()}")

    def speed_words(self) -> str:
        """'12 tokens · first after 85 ms · 41.0 tok/s' (tok/s counted after the first token)."""
        words = f"{self.tokens} tokens"
        if self.ttft_s is not None:
            words += f" · first after {self.ttft_s * 1000:.0f} ms"
            generating = time.monotonic() - self.sent_at - self.ttft_s
            if self.tokens > 1 and generating > 0:
                words += f" · {(self.tokens - 1) / generating:.1f} tok/s"
        return words

    def _finish(self, error: str | None) -> None:
        self.streaming = False
        status = self.query_one("#prompt-status", Static)
        status.update(error if error else f"[$success]done[/] · {self.speed_words()}")

    def action_close(self) -> None:
        """Close the box; a generation still streaming goes on (``a`` in the queue aborts it)."""
        if self.streaming:
            self._box_closed.set()
            self.notify(f"the prompt to {self.instance} goes on generating: a on its queue row aborts it",
                        title="Prompt", timeout=6, markup=False)
        self.dismiss(None)
