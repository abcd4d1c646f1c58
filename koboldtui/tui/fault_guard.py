"""The panel never exits on a bug: an exception in an action or handler becomes a toast.

A control panel that dies takes the person's view of their servers with it. Every key
runs through ``run_action``; an exception there is reported (a toast, and the traceback
in ``panel-errors.log``) and the key is treated as handled. An exception that escapes a
widget's message handler is reported the same way; Textual has stopped that widget's
message loop by then, so the panel closes every dialog and builds a fresh dashboard (the
polls redraw it within a second). Only a storm of faults (a bug that repeats every frame)
or a fault in the app's own loop still ends the app, so the terminal is never left spinning.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from textual._context import active_message_pump
from textual.css.query import NoMatches
from textual.worker import WorkerFailed

from koboldtui.tui import gauges

STORM_COUNT = 30  # this many faults ...
STORM_WINDOW_S = 10.0  # ... in this many seconds: give up and exit with the traceback
# Textual races we know and can ignore: the list changed under a fast key (e.g. OptionList
# PageUp while the palette refills: KeyError in ``_move_page``). The key does nothing.
KNOWN_RACES = frozenset({"_move_page"})


def is_textual_race(error: BaseException) -> bool:
    """A fast key met a Textual widget mid-change: a known list race, or a query inside
    Textual's own code that found its widget not built yet or already gone (NoMatches)."""
    frames = traceback.extract_tb(error.__traceback__)
    if {frame.name for frame in frames} & KNOWN_RACES:
        return True
    inner = [f for f in frames if not f.filename.endswith("fault_guard.py")]
    return isinstance(error, NoMatches) and bool(inner) and all("koboldtui" not in f.filename for f in inner)


class FaultGuard:
    """Mixin for the App: ``run_action`` and ``_handle_exception`` report instead of exiting."""

    fault_log: Path | None = None

    def _init_fault_guard(self, log_file: Path | None) -> None:
        self.fault_log = log_file
        self.faults: list[str] = []
        self.ignored_races = 0
        self._fault_times: deque[float] = deque(maxlen=STORM_COUNT)
        self.screen_resets = 0
        self._reset_pending = False

    def report_fault(self, where: str, error: BaseException) -> bool:
        """Tell the person (toast + log file); False when faults come too fast to go on."""
        text = f"{where}: {type(error).__name__}: {error}"
        self.faults.append(text)
        now = time.monotonic()
        self._fault_times.append(now)
        if self.fault_log is not None:
            try:
                self.fault_log.parent.mkdir(parents=True, exist_ok=True)
                with self.fault_log.open("a", encoding="utf-8") as out:
                    out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")
                    out.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            except OSError:
                pass
        where_log = f" (details in {self.fault_log})" if self.fault_log else ""
        try:
            self.notify(  # type: ignore[attr-defined]
                f"{gauges.plain(text)}{gauges.plain(where_log)}\nThe panel goes on; please report this.",
                title="Panel error", severity="error", timeout=10,
            )
        except Exception:  # noqa: BLE001, S110 - reporting must never raise; the log file has it
            pass
        storm = len(self._fault_times) == STORM_COUNT and now - self._fault_times[0] < STORM_WINDOW_S
        return not storm

    async def run_action(self, action: Any, default_namespace: Any = None, namespaces: Any = None) -> bool:
        """Every key and palette command goes through here: a failing action becomes a toast."""
        try:
            return await super().run_action(action, default_namespace, namespaces)  # type: ignore[misc]
        except Exception as error:  # noqa: BLE001 - reported, the panel goes on
            if is_textual_race(error):
                self.ignored_races += 1
                return True
            label = action if isinstance(action, str) else getattr(action, "__name__", str(action))
            if not self.report_fault(f"key action {label}", error):
                super()._handle_exception(error)  # type: ignore[misc]
            return True

    def _on_key(self, event: Any) -> None:
        """A key that arrives while the app shuts down (no screen left) is dropped, not fatal.

        Textual calls every class's ``_on_key`` along the MRO; ``prevent_default`` stops the
        App's own one, which would ask for a screen that is no longer there.
        """
        if not getattr(self, "screen_stack", None):
            event.prevent_default()

    def _handle_exception(self, error: Exception) -> None:
        """An exception escaped a handler: report it; exit only on a storm or before the UI runs."""
        running = getattr(self, "is_running", False) and not getattr(self, "_exit_renderables", None)
        try:
            pump = active_message_pump.get()
        except LookupError:
            pump = None
        worker = isinstance(error, WorkerFailed)  # a worker's failure leaves every loop running
        if running and (worker or pump is not self) and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            inner = error.error if isinstance(error, WorkerFailed) else error
            if is_textual_race(inner):
                self.ignored_races += 1
                if not worker:
                    self._schedule_reset()
                return
            if self.report_fault("worker" if worker else "handler", inner):
                if not worker:
                    self._schedule_reset()
                return
        super()._handle_exception(error)  # type: ignore[misc]

    def _schedule_reset(self) -> None:
        if not self._reset_pending:
            self._reset_pending = True
            self.call_later(self._reset_screens)  # type: ignore[attr-defined]

    async def _reset_screens(self) -> None:
        """Close every dialog and show a fresh dashboard: a widget whose handler raised is dead.

        The old dashboard stays at the bottom of the stack, hidden (Textual cannot replace
        the last screen); ``KoboldPanel.dashboard`` is the topmost one.
        """
        app: Any = self
        try:
            while len(app.screen_stack) > 1 and not (app.screen.id or "").startswith("dashboard"):
                await app.pop_screen()
            await app.push_screen(app.fresh_dashboard(self.screen_resets + 1))
            self.screen_resets += 1
        finally:
            self._reset_pending = False
