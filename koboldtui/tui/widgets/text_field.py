"""An Input whose editing keys take effect in the order they were typed.

Textual runs a widget's key bindings (ctrl+u, ctrl+w, backspace, home, ...) only after the
key has bubbled up to the app, while printable keys are inserted at once by the widget. So
``ctrl+u`` followed at once by typing (one read from the terminal, as a paste or a fast
typist sends it) inserted the text first and then deleted it along with the old text.
Here the field's own bindings run in the field, in order, like any other key.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class TextField(Input):
    """A text field for the panel's forms: Input, with its editing keys applied in order."""

    async def _on_key(self, event: events.Key) -> None:
        bindings = self._bindings.key_to_bindings.get(event.key)
        if bindings and not event.is_printable:
            event.stop()
            event.prevent_default()
            await self.run_action(bindings[0].action)
            return
        await super()._on_key(event)
