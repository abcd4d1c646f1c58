"""The Horde panel: worker state, the local-priority countdown, jobs, kudos and problems.

It shows the selected instance's worker, so the person can see at a glance whether the
Horde is using the machine, when it may again, and what (if anything) went wrong. The
words never contradict each other: the local-priority countdown shows only while the
worker could take jobs, an old error shows only while the worker is still held up by it,
and the card keeps one height whatever it says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.widgets import Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import InstanceView
from koboldtui.tui.keys import panel_bindings
from koboldtui.tui.panel_words import panel_words
from koboldtui.tui.widgets.countdown import LocalPriorityCountdown

# Worker states in which the local-priority window decides whether it pops a job.
POPPING_STATES = frozenset({"starting", "idle", "popping", "generating", "paused_local", "paused",
                            "running", "working", "waiting"})
# Why there is no countdown, per state that cannot take jobs.
HELD_WORDS = {
    "off": "no Horde worker on this instance",
    "disabled": "no Horde worker on this instance",
    "stopped": "worker stopped: w starts it",
    "stopping": "worker stopping: finishing the jobs in hand",
    "error": "worker stopped by the error below: fix it, then w",
    "maintenance": "in maintenance: the Horde sends no jobs; Z clears it",
    "backoff": "the Horde did not answer: retrying",
}
ERROR_STATES = frozenset({"error", "backoff", "maintenance"})
# The worker's state in the panel's words (the raw word stays in the status JSON).
STATE_WORDS = {
    "starting": "starting",
    "idle": "idle · asks the Horde for jobs",
    "popping": "asking the Horde for a job",
    "generating": "generating for the Horde",
    "paused_local": "paused for local requests",
    "paused": "paused for local requests",
    "maintenance": "in maintenance",
    "backoff": "waiting to retry",
    "error": "stopped by an error",
    "stopping": "stopping",
    "stopped": "stopped",
}


def state_words(state: str) -> str:
    """How the card names a worker state."""
    return STATE_WORDS.get(state, state)

STATE_VARIABLE = {
    "running": "$success",
    "generating": "$success",
    "popping": "$success",
    "paused_local": "$warning",
    "backoff": "$warning",
    "working": "$success",
    "idle": "$success",
    "paused": "$warning",
    "waiting": "$warning",
    "maintenance": "$warning",
    "starting": "$secondary",
    "stopping": "$secondary",
    "stopped": "$text-muted",
    "off": "$text-muted",
    "error": "$error",
    "failed": "$error",
}


def _num(value: Any, fmt: str = ",.0f") -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "-"


def horde_lines(inst: InstanceView | None) -> tuple[str, str]:
    """(title line, details) for an instance's Horde dict; copes with missing keys."""
    if inst is None:
        return "[$text-muted]no instance selected[/]", ""
    if inst.state == "unreachable":
        return (
            f"[b]{gauges.plain(inst.name)}[/]: [$error]unreachable[/]",
            gauges.plain(inst.last_error or "it does not answer"),
        )
    if inst.foreign is not None:  # not a koboldtui server: what it says about itself instead
        return (
            f"[b]{gauges.plain(inst.name)}[/]: {gauges.plain(inst.foreign.summary())}",
            (
                f"[$text-muted]a {gauges.plain(inst.foreign.flavour)} server: koboldtui runs no "
                "Horde worker for it[/]"
            ),
        )
    horde = inst.horde
    if not horde or horde.get("state") in (None, "off", "disabled"):
        if not inst.running:
            return (f"[b]{gauges.plain(inst.name)}[/]: [$text-muted]instance {inst.state}[/]",
                    "Its Horde worker runs while the instance runs.")
        return (
            f"[b]{gauges.plain(inst.name)}[/]: [$text-muted]Horde worker off[/]",
            "Set it up in the instance form ([b]e[/]): turn the Horde on, give a worker name and API key.",
        )
    state = str(horde.get("state", "?"))
    var = STATE_VARIABLE.get(state, "$foreground")
    user = gauges.plain(horde.get("username") or "?")
    worker = gauges.plain(horde.get("worker_name") or horde.get("worker_id") or "")
    title = f"[b]{gauges.plain(inst.name)}[/]: [b {var}]{gauges.plain(state_words(state))}[/]  [$text-muted]{worker}[/]"
    lines = [
        (
            f"jobs [b]{_num(horde.get('jobs_done'))}[/] done · {_num(horde.get('jobs_faulted'))} faulted"
            f" · {_num(horde.get('jobs_dropped'))} dropped"
        ),
        (
            f"kudos [b]{_num(horde.get('kudos_session'))}[/] session · {_num(horde.get('kudos_total'))} total"
            f"  user {user}"
        ),
        f"speed [b]{_num(horde.get('tokens_per_s'), '.1f')}[/] tok/s",
    ]
    skipped = horde.get("skipped") or {}
    if isinstance(skipped, dict) and skipped:
        parts = ", ".join(f"{gauges.plain(k)} {v}" for k, v in sorted(skipped.items()))
        lines.append(f"[$text-muted]requests passed by:[/] {parts}")
    last_error = horde.get("last_error")
    if last_error and state in ERROR_STATES:  # an error the worker recovered from is history
        lines.insert(0, f"[$error]{gauges.plain(panel_words(str(last_error)))}[/]")
    if state == "maintenance" and horde.get("maintenance_message"):
        lines.insert(0, f"[$warning]{gauges.plain(horde['maintenance_message'])}[/]")
    return title, "\n".join(lines)


class HordePanel(Vertical, can_focus=True):
    """Worker state and countdown for the selected instance."""

    BINDINGS: ClassVar[list[BindingType]] = panel_bindings("horde")

    BORDER_TITLE = "Horde"

    def __init__(self, clock: Callable[[], float], tick_s: float | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._tick_s = tick_s

    def compose(self) -> ComposeResult:
        yield Static("[$text-muted]waiting for instances…[/]", id="horde-title")
        yield LocalPriorityCountdown(self._clock, self._tick_s, id="countdown")
        yield Static("", id="horde-details")

    def show_instance(self, inst: InstanceView | None, polled_at: float) -> None:
        """Redraw for the selected instance's latest status."""
        title, details = horde_lines(inst)
        self.query_one("#horde-title", Static).update(title)
        self.query_one("#horde-details", Static).update(details)
        countdown = self.query_one(LocalPriorityCountdown)
        horde = inst.horde if inst is not None else {}
        state = str(horde.get("state") or "off")
        if inst is not None and inst.running and state in POPPING_STATES and "remaining_s" in horde:
            countdown.set_window(
                float(horde.get("remaining_s") or 0.0), float(horde.get("window_s") or 0.0),
                polled_at,
                source=inst.name,
            )
        else:
            held = HELD_WORDS.get(state, f"worker {state}")
            if state == "backoff" and horde.get("backoff_s"):
                held += f" in {float(horde['backoff_s']):.0f} s"
            countdown.disable(held)
        self.border_subtitle = "H view · w start · W stop · z maint · Z clear"
