"""The ``koboldtui up`` loop as a library: start, watch and restart instances until told to stop, then stop what it started.

Kept apart from argparse and signal handling so it can be driven by any stop event
(SIGTERM/Ctrl-C in the CLI, a test, a service manager).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from koboldtui.control.state import RUNNING, InstanceSnapshot, InstanceState
from koboldtui.control.supervisor import Supervisor


def describe(snap: InstanceSnapshot) -> str:
    """One line for the ``up`` console about a state change."""
    if snap.state is InstanceState.FAILED:
        return f"{snap.name}: failed: {snap.last_error}"
    if snap.state in RUNNING:
        return (
            f"{snap.name}: {snap.state.value} on port {snap.port} "
            f"(pid {snap.pid}, restarts {snap.restarts})"
        )
    return f"{snap.name}: {snap.state.value}"


def run_foreground(
    supervisor: Supervisor,
    names: Sequence[str],
    *,
    stop_event: threading.Event,
    interval_s: float = 0.5,
    say: Callable[[str], None] = print,
) -> None:
    """Adopt what runs, start ``names``, poll until ``stop_event`` is set, then stop what ``up`` started.

    Instances it only adopted (started from the panel, another shell or the gateway) keep
    running; so do its own that someone else stopped and started again meanwhile.
    """
    for name in supervisor.reattach():
        say(f"{name}: adopted the running instance")
    if not names and not supervisor.managed():
        say(
            "no autostart instances: mark some with `koboldtui instance edit NAME --autostart`, "
            "or name them: `koboldtui up NAME ...`"
        )
    for name in names:
        if stop_event.is_set():
            break
        snap = supervisor.supervise(name)
        if snap.state is InstanceState.FAILED:
            say(f"{name}: failed to start: {snap.last_error}")
    seen: dict[str, tuple[str, int | None]] = {}
    while not stop_event.is_set():
        managed = set(supervisor.managed())
        for snap in supervisor.poll():
            key = (snap.state.value, snap.pid)
            if snap.name not in managed and snap.state is not InstanceState.FAILED:
                continue
            if seen.get(snap.name, (InstanceState.STOPPED.value, None)) != key:
                say(describe(snap))
            seen[snap.name] = key
        stop_event.wait(interval_s)
    say("stopping the instances this `up` started ...")
    for snap in supervisor.stop_all(started_by="up"):
        say(f"{snap.name}: {snap.state.value}")
