"""Is a recorded launch still our instance? Verified before adopting, so a reused pid or port is never mistaken for it.

The strong proof is the instance's own status route answering with the launch token and
pid we recorded. While a child is still starting (not listening yet) the token in its
``/proc/PID/cmdline`` (it was passed as ``--launch-token``) identifies it instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from koboldtui.control.command import probe_command_health
from koboldtui.control.probe import Health, fetch_status, instance_identity, probe_health
from koboldtui.control.process import LAUNCH_TOKEN_ENV, cmdline_has, environ_has, pid_alive
from koboldtui.store.instances import Launch


@dataclass(frozen=True)
class LaunchCheck:
    """The verdict on one launch row: ``ours`` (adopt it) or not, and why."""

    ours: bool
    how: str  # "status" | "cmdline" | "gone" | "other"
    health: Health
    reason: str


def launch_url(host: str, port: int) -> str:
    """The loopback-reachable base URL of a launch (wildcard binds are probed on loopback)."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check_launch(
    launch: Launch, host: str, *, api_key: str | None = None, health_path: str | None = None
) -> LaunchCheck:
    """Decide whether ``launch`` is a live instance we started (pid alive and token confirmed)."""
    if not pid_alive(launch.pid):
        return LaunchCheck(False, "gone", Health.DOWN, f"pid {launch.pid} is no longer running")
    base = launch_url(host, launch.port)
    status = fetch_status(base, api_key=api_key)
    if status is not None:
        pid, token = instance_identity(status)
        if token == launch.token and pid == launch.pid:
            return LaunchCheck(
                True, "status", probe_health(base, api_key=api_key), "token confirmed"
            )
    if launch.token and cmdline_has(launch.pid, launch.token):
        health = probe_health(base, api_key=api_key)
        return LaunchCheck(True, "cmdline", health, "token found in the process arguments")
    if launch.token and environ_has(launch.pid, LAUNCH_TOKEN_ENV, launch.token):
        # a command instance: readiness through its own health path ("" = the known paths)
        health = probe_command_health(base, health_path or "", api_key=api_key).health
        return LaunchCheck(True, "environ", health, "token found in the process environment")
    return LaunchCheck(
        False,
        "other",
        Health.DOWN,
        f"pid {launch.pid} is alive but is not the instance that was started (pid reused)",
    )
