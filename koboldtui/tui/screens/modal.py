"""The base of every panel dialog: dismissing is idempotent.

A fast second Enter (or Enter then Escape) reaches a dialog that is already on its way
out; Textual then pops the screen under it, or raises ``ScreenStackError`` and the whole
app exits. Here the first answer wins and later ones are ignored. Likewise a worker that
finishes after its dialog closed (a streamed token, a catalogue) hands its result to
``from_thread``, which drops it instead of querying widgets that are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from textual import events
from textual.await_complete import AwaitComplete
from textual.screen import ModalScreen

ResultT = TypeVar("ResultT")


class PanelModal(ModalScreen[ResultT], Generic[ResultT]):
    """A modal screen whose ``dismiss`` acts once, and only while it is the top screen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("classes", "modal")
        super().__init__(*args, **kwargs)
        self.dismissed = False
        self._resumed_once = False

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        """The first resume follows the mount, which styled every widget just now: skip a second pass.

        Textual restyles the whole screen on each push (its styles may have changed while it
        was suspended); for a dialog composed a moment ago that pass only doubles the cost
        of opening it. Later resumes (a question closed above it) keep the restyle.
        """
        if not self._resumed_once:
            self._resumed_once = True
            event.refresh_styles = False

    def dismiss(self, result: ResultT | None = None) -> AwaitComplete:  # type: ignore[override]
        """Close with ``result`` the first time; later calls (a key that raced the close) do nothing."""
        if self.dismissed or not self.is_attached or self.app.screen is not self:
            return AwaitComplete.nothing()
        self.dismissed = True
        if not self.is_mounted:  # esc before the dialog finished mounting: close right after
            self.call_after_refresh(lambda: ModalScreen.dismiss(self, result))
            return AwaitComplete.nothing()
        return super().dismiss(result)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that reach a dialog before it is built, or after it closed, do nothing."""
        if not self.is_mounted or self.dismissed:
            return False
        return super().check_action(action, parameters)

    def from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        """From a worker thread: run ``callback`` on the UI thread unless the dialog closed meanwhile."""

        def run() -> None:
            if self.is_attached and not self.dismissed:
                callback(*args)

        try:
            self.app.call_from_thread(run)
        except RuntimeError:  # the app has shut down: nobody to show it to
            pass
