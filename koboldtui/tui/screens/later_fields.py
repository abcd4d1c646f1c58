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
from koboldtui.tui.widgets.marked_selection import MarkedSelectionList
from koboldtui.tui.widgets.text_field import TextField


SWITCH_NAMES = {"auto_restart": "restart after a crash", "autostart": "start with the panel", "horde_enabled": ""}


def switch_words(switch_id: str, on: bool) -> str:
    """A switch's label with its state in words: with NO_COLOR a switch is a grey block either way."""
    name = SWITCH_NAMES[switch_id]
    state = "on" if on else "off"
    return f"{name}: {state}" if name else state


class LaterFields(Vertical):
    """Switches, GPU set and Horde settings of one draft."""

    DEFAULT_CSS = "LaterFields { height: auto; }"

    def __init__(self, draft: InstanceDraft, gpus: GpuReport) -> None:
        super().__init__(id="later-fields")
        self.draft = draft
        self.gpus = gpus
        self._drawn = False  # compose has built the fields (they may not be mounted yet)
        self._ready = False  # on_mount has run: the fields can be queried
        self._early: tuple[InstanceDraft, InstanceDraft] | None = None  # arrived between compose and mount

    def compose(self) -> ComposeResult:
        self._drawn = True
        with Horizontal(classes="form-row switches"):
            yield Label(switch_words("auto_restart", self.draft.auto_restart), id="auto_restart-label")
            yield Switch(self.draft.auto_restart, id="auto_restart")
            yield Label(switch_words("autostart", self.draft.autostart), id="autostart-label")
            yield Switch(self.draft.autostart, id="autostart")
        yield Label("GPUs (none ticked = CPU only; space ticks)")
        if self.gpus.gpus:
            yield MarkedSelectionList(
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
        yield Label("AI Horde worker: kudos for idle time (a key: aihorde.net/register)")
        # the fields' names sit in their top borders (border_title): no extra widgets to mount
        with Horizontal(classes="form-row"):
            yield Label(switch_words("horde_enabled", self.draft.config.horde.enabled), classes="switch-label",
                        id="horde_enabled-label")
            yield Switch(self.draft.config.horde.enabled, id="horde_enabled")
            with Vertical():
                yield TextField(self.draft.config.horde.worker_name, placeholder="worker name", id="horde_name")
                yield Static("", id="horde_name-msg", classes="field-msg")
        with Horizontal(classes="form-row"):
            with Vertical():
                yield TextField(self.draft.config.horde.api_key, placeholder="Horde API key", password=True,
                                id="horde_key")
                yield Static("", id="horde_key-msg", classes="field-msg")
            with Vertical():
                yield TextField(f"{self.draft.config.horde.window_s:g}", placeholder="window s", id="horde_window",
                                tooltip="local-priority window: seconds without Horde jobs after a local request")
                yield Static("", id="horde_window-msg", classes="field-msg")
        yield TextField(self.draft.config.horde.url, placeholder="Horde URL", id="horde_url")
        yield Static("", id="horde_url-msg", classes="field-msg")

    @staticmethod
    def _shown(draft: InstanceDraft) -> dict[str, Any]:
        """What each field shows for a draft when it is first drawn."""
        horde = draft.config.horde
        return {"auto_restart": draft.auto_restart, "autostart": draft.autostart,
                "horde_enabled": horde.enabled, "horde_name": horde.worker_name, "horde_key": horde.api_key,
                "horde_window": f"{horde.window_s:g}", "horde_url": horde.url}

    def on_mount(self) -> None:
        titles = {"horde_name": "worker name", "horde_key": "Horde API key",
                  "horde_window": "local-priority window, s", "horde_url": "Horde URL"}
        for field_id, title in titles.items():
            self.query_one(f"#{field_id}").border_title = title
        self._ready = True
        if self._early is not None:
            old, new = self._early
            self._early = None
            self.arrived(old, new)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        if event.switch.id in SWITCH_NAMES:
            self.query_one(f"#{event.switch.id}-label", Label).update(switch_words(event.switch.id, event.value))

    @property
    def composed(self) -> bool:
        """True once the fields exist (the Lazy wrapper mounts them after the form's first paint)."""
        return bool(self.query("#autostart"))

    def value(self, field: str) -> Any:
        """The field's value (an Input's text, a Switch's bool); the draft's before it is mounted."""
        if not self.composed:
            return self._shown(self.draft)[field]
        widget = self.query_one(f"#{field}")
        assert isinstance(widget, (Input, Switch))
        return widget.value

    def selected_gpus(self) -> tuple[str, ...]:
        """The ticked GPUs in priority order (the draft's before the list is mounted)."""
        lists = self.query("#gpus") if self.composed else None
        chosen = set(lists.first(SelectionList).selected) if lists else set(self.draft.gpu_uuids)
        return tuple(g.uuid for g in self.gpus.gpus if g.uuid in chosen)

    def arrived(self, old: InstanceDraft, new: InstanceDraft) -> None:
        """The backend's draft replaced the guess: update the fields the person left alone."""
        if self._drawn and not self._ready:  # built from the old draft, not mounted yet: on_mount applies it
            self._early = (old, new)
            return
        self.draft = new
        if not self._drawn:  # compose draws the new draft
            return
        before, after = self._shown(old), self._shown(new)
        for key, value in after.items():
            widget = self.query_one(f"#{key}")
            assert isinstance(widget, (Input, Switch))
            if widget.value == before[key] and value != before[key]:
                widget.value = value
        lists = self.query("#gpus")
        if lists and set(new.gpu_uuids) != set(old.gpu_uuids):
            selection = lists.first(SelectionList)
            if set(selection.selected) == set(old.gpu_uuids):
                selection.deselect_all()
                for uuid in new.gpu_uuids:
                    if uuid in {g.uuid for g in self.gpus.gpus}:
                        selection.select(uuid)
