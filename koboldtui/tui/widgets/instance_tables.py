"""The Instances table (what runs where) and the Batch table (how each one batches).

The Instances table's cursor is the panel's "selected instance": start/stop, model
switch, batch size, Horde and prompt keys all act on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from koboldtui.tui import gauges
from koboldtui.tui.backend import InstanceView
from koboldtui.tui.widgets.keyed_table import KeyedTable

STATE_STYLE = {
    "ready": "b",
    "failed": "b reverse",
    "stopped": "dim",
    "starting": "i",
    "loading": "i",
    "stopping": "i",
    "unreachable": "b reverse",
}


def _model_name(inst: InstanceView, width: int = 22) -> str:
    if inst.status is not None:
        name = inst.status.engine.model_name
    elif inst.foreign is not None and inst.foreign.model:
        name = inst.foreign.model  # what a command/remote server says it serves
    elif inst.kind == "remote":
        name = "remote"
    else:
        name = inst.model.rsplit("/", 1)[-1] if inst.model else "bundled"
    return name if len(name) <= width else name[: width - 1] + "…"


class InstancesTable(KeyedTable):
    """Name, model, port, GPUs, state, restarts, uptime; s starts, x stops."""

    BORDER_TITLE = "Instances"
    COLUMNS = (
        ("name", "name"),
        ("model", "model"),
        ("port", "port"),
        ("gpus", "GPUs"),
        ("state", "state"),
        ("restarts", "rst"),
        ("uptime", "uptime"),
    )

    def show(self, instances: Iterable[InstanceView]) -> None:
        rows: dict[str, tuple[object, ...]] = {}
        for inst in instances:
            style = STATE_STYLE.get(inst.state, "")
            state = f"[{style}]{inst.state}[/]" if style else inst.state
            if inst.foreign is not None and inst.foreign.busy is not None:
                state += " · busy" if inst.foreign.busy else " · idle"
            rows[inst.name] = (
                gauges.plain(inst.name),
                gauges.plain(_model_name(inst)),
                str(inst.port),
                gauges.plain(inst.gpus or "CPU")
                + (f" · {inst.vram_mib / 1024:.1f}G" if inst.vram_mib is not None else ""),
                state,
                str(inst.restarts),
                gauges.duration(inst.uptime_s) if inst.running else "-",
            )
        self.sync_rows(rows)
        self.border_subtitle = "n new · e edit · s start · x stop · m model · l log"


def slots_cell(busy: int, total: int, width: int = 8) -> str:
    """'▮▮▯▯ 2/4' style slot meter (no colour: the table's theme styles it)."""
    total = max(total, 0)
    shown = min(total, width)
    filled = min(shown, round(busy * shown / total)) if total else 0
    return "▮" * filled + "▯" * (shown - filled) + f" {busy}/{total}"


class BatchTable(KeyedTable):
    """n_batch, n_ubatch (= min(n_batch, 1024)) and busy slots per instance; b changes it."""

    BORDER_TITLE = "Batch"
    COLUMNS = (
        ("name", "instance"),
        ("n_batch", "n_batch"),
        ("n_ubatch", "n_ubatch"),
        ("slots", "slots"),
        ("ctx", "ctx/slot"),
    )

    def show(self, instances: Iterable[InstanceView]) -> None:
        rows: dict[str, tuple[object, ...]] = {}
        for inst in instances:
            if inst.foreign is not None:  # a foreign server: only the slots it reports
                facts = inst.foreign
                slots = (
                    slots_cell(facts.slots_busy or 0, facts.slots_total)
                    if facts.slots_total is not None
                    else "-"
                )
                rows[inst.name] = (gauges.plain(inst.name), "-", "-", slots, "-")
                continue
            if inst.status is None:
                rows[inst.name] = (gauges.plain(inst.name), "-", "-", "-", "-")
                continue
            eng = inst.status.engine
            rows[inst.name] = (
                gauges.plain(inst.name),
                str(eng.n_batch),
                str(eng.n_ubatch),
                slots_cell(eng.slots_busy, eng.parallel),
                str(eng.n_ctx_per_seq),
            )
        self.sync_rows(rows)
        self.border_subtitle = "b batch size"
