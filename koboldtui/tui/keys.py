"""Every dashboard key in one place, and which panel's footer shows it (keys follow focus).

Each key works anywhere on the dashboard; the footer shows only the keys of the panel that
has focus (as lazygit does), plus the few that matter everywhere. A panel gets a visible
copy of its keys with the same id, so ``[keymap]`` remaps both.
"""

from __future__ import annotations

from dataclasses import replace

from textual.binding import Binding

_ALL = [
    Binding("1", "focus_panel('gpus')", "GPUs", id="focus-gpus", show=False, tooltip="Focus the GPUs/VRAM panel"),
    Binding("2", "focus_panel('horde')", "Horde", id="focus-horde", show=False, tooltip="Focus the Horde panel"),
    Binding("3", "focus_panel('queue')", "Queue", id="focus-queue", show=False, tooltip="Focus the request queue"),
    Binding("4", "focus_panel('batch')", "Batch", id="focus-batch", show=False, tooltip="Focus the batch panel"),
    Binding("5", "focus_panel('instances')", "Instances", id="focus-instances", show=False,
            tooltip="Focus the instances table"),
    Binding("n", "app.new_instance", "New", id="new-instance", tooltip="Create a new instance"),
    Binding("e", "app.edit_instance", "Edit", id="edit-instance", show=False,
            tooltip="Edit the selected instance (restarts it if running)"),
    Binding("s", "app.start_instance", "Start", id="start-instance", tooltip="Start the selected instance"),
    Binding("x", "app.stop_instance", "Stop", id="stop-instance", tooltip="Stop the selected instance"),
    Binding("d", "app.dismiss_failure", "Dismiss", id="dismiss-failure", show=False,
            tooltip="Dismiss the selected instance's failure (its row stops saying why; the log keeps it)"),
    Binding("R", "app.restart_instance", "Restart", id="restart-instance", show=False,
            tooltip="Restart the selected instance"),
    Binding("m", "app.pick_model", "Model", id="switch-model", tooltip="Switch the selected instance to another model"),
    Binding("b", "app.batch_size", "Batch", id="batch-size", show=False,
            tooltip="Change the selected instance's batch size (reloads it)"),
    Binding("g", "app.gpu_priority", "GPUs", id="gpu-priority", tooltip="Order and enable GPUs"),
    Binding("p", "app.prompt", "Prompt", id="prompt", tooltip="Send a prompt to the selected instance"),
    Binding("l", "app.show_log", "Log", id="show-log", show=False, tooltip="Show the selected instance's log"),
    Binding("a,delete", "app.abort_request", "Abort", id="abort-request", show=False,
            tooltip="Abort the request selected in the queue"),
    Binding("slash", "screen.filter_queue", "Filter", id="queue-filter", show=False,
            tooltip="Filter the queue by id, origin, instance or state (esc clears)"),
    Binding("w", "app.horde('start')", "Horde on", id="horde-start", show=False,
            tooltip="Start the selected instance's Horde worker"),
    Binding("W", "app.horde('stop')", "Horde off", id="horde-stop", show=False,
            tooltip="Stop the selected instance's Horde worker"),
    Binding("z", "app.horde('maintenance-on')", "Maintenance", id="horde-maintenance", show=False,
            tooltip="Put the Horde worker into maintenance"),
    Binding("Z", "app.horde('maintenance-off')", "Clear maint.", id="horde-maintenance-clear", show=False,
            tooltip="Take the Horde worker out of maintenance"),
    Binding("G", "app.gateway_view", "Gateway", id="gateway-view",
            tooltip="The gateway: its URL, pools and instances, requests and share, starts, TTL stops, errors"),
    Binding("u", "app.use_model", "Use model", id="gateway-use", show=False,
            tooltip="Choose the box's current model: where the gateway sends KoboldAI routes (m on its row too)"),
    Binding("c", "app.copy_gateway_url", "Copy URL", id="gateway-copy-url", show=False,
            tooltip="Copy the gateway's URL to the clipboard (it is on the dashboard's gateway row as text too)"),
    Binding("H", "app.horde_view", "Horde", id="horde-view", tooltip="Horde contribution: every worker, kudos and jobs over time"),
]

# Shown in the footer whatever has focus.
GLOBAL_IDS = frozenset({"new-instance", "horde-view"})

PANEL_KEY_IDS: dict[str, tuple[str, ...]] = {
    "instances": ("start-instance", "stop-instance", "restart-instance", "edit-instance", "switch-model",
                  "show-log", "prompt", "dismiss-failure"),
    "batch": ("batch-size",),
    "queue": ("abort-request", "queue-filter"),
    "horde": ("horde-start", "horde-stop", "horde-maintenance", "horde-maintenance-clear"),
    "gpus": ("gpu-priority",),
}

DASHBOARD_BINDINGS = [replace(b, show=b.id in GLOBAL_IDS) for b in _ALL]


def panel_bindings(panel: str) -> list[Binding]:
    """The visible copies of one panel's keys, for that panel's BINDINGS."""
    wanted = PANEL_KEY_IDS[panel]
    by_id = {b.id: b for b in _ALL}
    return [replace(by_id[i], show=True) for i in wanted]
