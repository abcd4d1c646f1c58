"""The gateway as the panel shows it: its URL, the current model, each pool with its instances, and what it did.

Fed the JSON of the gateway's ``/api/koboldtui/gateway`` (what ``koboldtui gateway status
--json`` prints), read by the app's gateway poll in a worker thread; a gateway that does not
answer is a line saying so, never an error dialog. ``GatewayLine`` is the dashboard's one-row
card (URL, state, current model, its keys); ``GatewayView`` fills the gateway screen (G).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.widgets import Static

from koboldtui.tui.backend import GatewayReport


def gateway_lines(url: str, status: dict[str, Any] | None, reason: str | None = None) -> list[str]:
    """The view as Rich-markup lines (pure, so it is tested without a terminal)."""
    if status is None:
        return [f"[b]Gateway[/b] {escape(url)}  [dim]not answering{': ' + escape(reason) if reason else ''}"
                " — start it with `koboldtui gateway` or `koboldtui gateway enable`[/dim]"]
    return _status_lines(url, status)


def _status_lines(url: str, status: dict[str, Any]) -> list[str]:
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


STATE_STYLE = {"answering": "$success", "not answering": "$error", "not enabled": "$text-muted"}


def gateway_card(report: GatewayReport | None) -> str:
    """The dashboard's gateway row: the URL as text (to select or copy with c), state, current model, keys."""
    if report is None:
        return "[b]Gateway[/b]  [$text-muted]looking…[/]"
    # no current model chosen yet: nothing to say there (u chooses one), so 80 columns keep one row
    current = f" · model [b]{escape(report.current_model)}[/b]" if report.current_model else ""
    state = f"[{STATE_STYLE[report.state]}]{report.state}[/]"
    return f"[b]Gateway[/b] {escape(report.url)}  {state}{current}  [$text-muted]G view · u use · c copy[/]"


def gateway_screen_lines(report: GatewayReport) -> list[str]:
    """The gateway screen: the whole status, or how to get one (not enabled / not answering)."""
    if report.status is not None:
        return _status_lines(report.url, report.status)
    current = escape(report.current_model) if report.current_model else "none chosen"
    lines = [f"[b]Gateway[/b] {escape(report.url)}  current model [b]{current}[/b]"]
    if report.enabled:
        why = f": {escape(report.reason)}" if report.reason else ""
        lines.append(f"  [$error]not answering{why}[/] — its row in Instances is [b]gateway[/b]: "
                     "s starts it, enter shows why it stopped, l its log")
    else:
        lines.append("  [$text-muted]not enabled: `koboldtui gateway enable` saves it as the supervised instance "
                     "[b]gateway[/b] (then s on its row starts it), or run `koboldtui gateway` in a shell[/]")
    lines.append("  u still sets the current model: the gateway reads it when it starts")
    return lines


class GatewayLine(Static):
    """The dashboard's one-row gateway card; ``show`` takes each gateway poll's report."""

    DEFAULT_CSS = "GatewayLine { height: auto; padding: 0 1; }"  # two rows when 80 columns are too few

    def show(self, report: GatewayReport | None) -> None:
        self.update(gateway_card(report))


class GatewayView(Static):
    """The gateway's row and view; call ``show`` with each poll's result."""

    DEFAULT_CSS = "GatewayView { height: auto; }"

    def __init__(self, url: str = "http://127.0.0.1:5000", **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.url = url

    def show(self, status: dict[str, Any] | None, reason: str | None = None) -> None:
        """Redraw from the gateway's status JSON (None: it did not answer, ``reason`` says why)."""
        self.update("\n".join(gateway_lines(self.url, status, reason)))

    def show_report(self, report: GatewayReport) -> None:
        """Redraw from a poll's report (not enabled and not answering each say what to do)."""
        self.url = report.url
        self.update("\n".join(gateway_screen_lines(report)))
