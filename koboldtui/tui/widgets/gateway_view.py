"""The gateway as the panel shows it: its URL, the current model, each pool with its instances, and what it did.

Fed the JSON of the gateway's ``/api/koboldtui/gateway`` (what ``koboldtui gateway status
--json`` prints); a gateway that does not answer is a line saying so, never an error
dialog. Not wired into the dashboard yet: the dashboard is being reworked (issue 19), and
this widget only needs ``show(status)`` called from the panel's poll.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.widgets import Static


def gateway_lines(url: str, status: dict[str, Any] | None, reason: str | None = None) -> list[str]:
    """The view as Rich-markup lines (pure, so it is tested without a terminal)."""
    if status is None:
        return [f"[b]Gateway[/b] {escape(url)}  [dim]not answering{': ' + escape(reason) if reason else ''}"
                " — start it with `koboldtui gateway` or `koboldtui gateway enable`[/dim]"]
    routing = status.get("routing", {})
    share = routing.get("share", {})
    instances = {i["name"]: i for i in status.get("instances", [])}
    lines = [f"[b]Gateway[/b] {escape(url)}  current model [b]{escape(str(status.get('current_model') or '-'))}[/b]"]
    for pool, members in sorted(status.get("pools", {}).items()):
        lines.append(f"  pool [b]{escape(pool)}[/b]")
        for name in members:
            inst = instances.get(name, {})
            flags = " pinned" if inst.get("pin") else ""
            if inst.get("ttl_min"):
                flags += f" ttl {inst['ttl_min']:g}m"
            if inst.get("started_by_gateway"):
                flags += " (started by the gateway)"
            lines.append(f"    {escape(name):<16} {inst.get('state', '?'):<11} {inst.get('requests', 0):>6} req "
                         f"{share.get(name, 0.0):>5.0%}  in flight {inst.get('in_flight', 0)}{flags}")
    lines.append(f"  affinity hits {routing.get('affinity_hits', 0)}  retries {routing.get('retries', 0)}  "
                 f"5xx {routing.get('errors_5xx', 0)}  on-demand starts {status.get('starts', 0)}  "
                 f"TTL stops {status.get('ttl_stops', 0)}  room stops {status.get('room_stops', 0)}")
    for error in status.get("last_errors", [])[-3:]:
        lines.append(f"  [red]{escape(error)}[/red]")
    return lines


class GatewayView(Static):
    """The gateway's row and view; call ``show`` with each poll's result."""

    DEFAULT_CSS = "GatewayView { height: auto; }"

    def __init__(self, url: str = "http://127.0.0.1:5000", **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.url = url

    def show(self, status: dict[str, Any] | None, reason: str | None = None) -> None:
        """Redraw from the gateway's status JSON (None: it did not answer, ``reason`` says why)."""
        self.update("\n".join(gateway_lines(self.url, status, reason)))
