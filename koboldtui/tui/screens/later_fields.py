"""The instance form's fields below the fold: restart/autostart, GPUs and the Horde worker.

They are mounted lazily, right after the form's first paint, so ``n`` and ``e`` show the
form at once; the form reads them through ``LaterFields.value`` (the draft's value until
they are mounted, which is what they would show).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, SelectionList, Static, Switch

from koboldtui.tui import gauges
from koboldtui.tui.backend import GpuReport, InstanceDraft


class LaterFields(Vertical):
    """Switches, GPU set and Horde settings of one draft."""

    DEFAULT_CSS = "LaterFields { height: auto; }"

    def __init__(self, draft: InstanceDraft, gpus: GpuReport) -> None:
        super().__init__(id="later-fields")
        self.draft = draft
        self.gpus = gpus

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-row switches"):
            yield Label("restart after a crash")
            yield Switch(self.draft.auto_restart, id="auto_restart")
            yield Label("start with the panel")
            yield Switch(self.draft.autostart, id="autostart")
        yield Label("GPUs (none ticked = CPU only; space ticks)")
        if self.gpus.gpus:
            yield SelectionList[str](
                *[
                    (
                        f"{g.index} {g.name} · {gauges.gib(g.mem_total_mib - g.mem_used_mib)} GiB free",
                        g.uuid,
                        g.uuid in self.draft.gpu_uuids,
                    )
                    for g in self.gpus.gpus
                ],
                id="gpus",
            )
        else:
            reason = self.gpus.unavailable_reason or "NVML found no GPU"
            yield Static(f"[$warning]No NVIDIA GPU — runs on CPU[/] ({gauges.plain(reason)})", id="gpus-none")
        yield Label("Horde worker")
        with Horizontal(classes="form-row"):
            yield Switch(self.draft.config.horde.enabled, id="horde_enabled")
            with Vertical():
                yield Input(self.draft.config.horde.worker_name, placeholder="worker name", id="horde_name")
                yield Static("", id="horde_name-msg", classes="field-msg")
        with Horizontal(classes="form-row"):
            with Vertical():
                yield Input(self.draft.config.horde.api_key, placeholder="Horde API key", password=True, id="horde_key")
                yield Static("", id="horde_key-msg", classes="field-msg")
            with Vertical():
                yield Input(f"{self.draft.config.horde.window_s:g}", placeholder="window s", id="horde_window",
                            tooltip="local-priority window: seconds without Horde jobs after a local request")
                yield Static("", id="horde_window-msg", classes="field-msg")
        yield Input(self.draft.config.horde.url, placeholder="Horde URL", id="horde_url")
        yield Static("", id="horde_url-msg", classes="field-msg")

    def _defaults(self) -> dict[str, Any]:
        """What each field shows when it is first drawn: the draft's values."""
        horde = self.draft.config.horde
        return {"auto_restart": self.draft.auto_restart, "autostart": self.draft.autostart,
                "horde_enabled": horde.enabled, "horde_name": horde.worker_name, "horde_key": horde.api_key,
                "horde_window": f"{horde.window_s:g}", "horde_url": horde.url}

    def value(self, field: str) -> Any:
        """The field's value (an Input's text, a Switch's bool); the draft's before it is mounted."""
        if not self.is_mounted:
            return self._defaults()[field]
        widget = self.query_one(f"#{field}")
        assert isinstance(widget, (Input, Switch))
        return widget.value

    def selected_gpus(self) -> tuple[str, ...]:
        """The ticked GPUs in priority order (the draft's before the list is mounted)."""
        lists = self.query("#gpus") if self.is_mounted else None
        chosen = set(lists.first(SelectionList).selected) if lists else set(self.draft.gpu_uuids)
        return tuple(g.uuid for g in self.gpus.gpus if g.uuid in chosen)
