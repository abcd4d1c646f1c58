"""The Instances table (what runs where) and the Batch table (how each one batches).

The Instances table's cursor is the panel's "selected instance": start/stop, model
switch, batch size, Horde and prompt keys all act on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from textual.binding import BindingType

from koboldtui.tui import gauges
from koboldtui.tui.backend import InstanceView
from koboldtui.tui.failure_reason import short_reason
from koboldtui.tui.keys import panel_bindings
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
    """The model's file name (two files may share one GGUF general.name, never one path); for a
    command/remote server, what it says it serves."""
    if inst.is_gateway:  # the gateway routes to every model: never listed as one (G shows it)
        name = "⇄ gateway"
    elif inst.status is None and inst.foreign is not None and inst.foreign.model:
        name = inst.foreign.model
    elif inst.status is None and inst.kind == "remote":
        name = "remote"
    elif inst.status is None and inst.kind == "command":  # its program, never "bundled"
        name = inst.program or "command"
    else:
        path = inst.status.engine.model_path if inst.status is not None and inst.status.engine.model_path else inst.model
        name = path.rsplit("/", 1)[-1] if path else "bundled"
        name = name.removesuffix(".gguf")
    return name if len(name) <= width else name[: width - 1] + "…"


def state_cell(inst: InstanceView, reason_width: int = 40) -> str:
    """The state word; a failed instance says why ("failed: port 5001 is taken …") until
    the failure is dismissed (d) or the instance starts again."""
    style = STATE_STYLE.get(inst.state, "")
    word = f"[{style}]{inst.state}[/]" if style else inst.state
    if inst.state == "failed":
        # DataTable cells are Rich markup (no theme variables): the word is bold reverse already
        return f"{word}: {gauges.plain(short_reason(inst.last_error, reason_width))}"
    if inst.state == "unreachable" and inst.last_error:  # a remote: why it does not answer
        return f"{word}: {gauges.plain(short_reason(inst.last_error, reason_width))}"
    if inst.foreign is not None and inst.foreign.busy is not None:
        word += " · busy" if inst.foreign.busy else " · idle"
    return word


def tokens_per_s_cell(inst: InstanceView) -> str:
    """The instance's generation speed over the last few seconds (all its requests together)."""
    if inst.status is not None:
        return f"{inst.status.engine.totals.last_tokens_per_s:.1f}"
    if inst.foreign is not None and inst.foreign.tokens_per_s is not None:
        return f"{inst.foreign.tokens_per_s:.1f}"
    return "-"


def cache_cell(inst: InstanceView) -> str:
    """Prompt tokens served from a slot's cache since start, and their share of all prompt tokens."""
    if inst.status is None:
        return "-"
    totals = inst.status.engine.totals
    if not totals.prompt_tokens:
        return "0"
    share = 100 * totals.prompt_tokens_cached / totals.prompt_tokens
    return f"{gauges.count(totals.prompt_tokens_cached)} {share:.0f}%"


class InstancesTable(KeyedTable):
    """Name, model, address, GPUs, uptime, RSS, CPU, tok/s, cache hits, state (and why it failed).

    s starts, x stops. Columns a narrow terminal cannot hold are dropped, least needed first;
    the address (where to send requests) never is, and the border names the selected
    instance's full URL.
    """

    BINDINGS: ClassVar[list[BindingType]] = panel_bindings("instances")

    BORDER_TITLE = "Instances"
    COLUMNS = (
        ("name", "name"),
        ("model", "model"),
        ("address", "address"),
        ("gpus", "GPUs"),
        ("restarts", "rst"),
        ("uptime", "uptime"),
        ("rss", "RSS"),
        ("cpu", "CPU%"),
        ("tps", "tok/s"),
        ("cache", "cached"),
        ("state", "state"),  # last: a failed instance's reason may run to the edge
    )
    # narrow terminals lose these first (80 columns keep name, model, address, GPUs, state); the
    # address is never dropped: it is where requests go
    DROP_ORDER = ("cache", "restarts", "cpu", "rss", "tps", "uptime", "gpus")
    # a failure's first words must show ("failed: port 5009 is tak…", issue 19): optional
    # columns make room for them; a longer reason may clip (enter shows it whole)
    WIDTH_CAPS: ClassVar[Mapping[str, int]] = {"state": 24}

    def show(self, instances: Iterable[InstanceView]) -> None:
        instances = list(instances)
        rows: dict[str, tuple[object, ...]] = {}
        for inst in instances:
            state = state_cell(inst)
            rows[inst.name] = (
                gauges.plain(inst.name),
                gauges.plain(_model_name(inst)),
                gauges.plain(inst.address),
                "-" if inst.is_gateway else gauges.plain(inst.gpus or "CPU")
                + (f" · {inst.vram_mib / 1024:.1f}G" if inst.vram_mib is not None else ""),
                str(inst.restarts),
                gauges.duration(inst.uptime_s) if inst.running else "-",
                gauges.size(inst.rss_bytes) if inst.running else "-",
                gauges.maybe(inst.cpu_pct, ".0f", "-") if inst.running else "-",
                tokens_per_s_cell(inst),
                cache_cell(inst),
                state,
            )
        self.sync_rows(rows)
        by_name = {inst.name: inst for inst in instances}
        chosen = by_name.get(self.selected_key or "")
        self.border_title = (f"{self.BORDER_TITLE} · {gauges.plain(chosen.name)} at {gauges.plain(chosen.url)}"
                             if chosen is not None and chosen.url else self.BORDER_TITLE)
        failed = chosen is not None and chosen.state == "failed"
        self.border_subtitle = ("enter details · d dismiss · s start · l log" if failed
                                else "G gateway view · m current model · x stop · l log"
                                if chosen is not None and chosen.is_gateway
                                else "enter details · s start · x stop · m model · l log")


def slots_cell(busy: int, total: int, width: int = 8) -> str:
    """'▮▮▯▯ 2/4' style slot meter (no colour: the table's theme styles it)."""
    total = max(total, 0)
    shown = min(total, width)
    filled = min(shown, round(busy * shown / total)) if total else 0
    return "▮" * filled + "▯" * (shown - filled) + f" {busy}/{total}"


class BatchTable(KeyedTable):
    """n_batch, n_ubatch (= min(n_batch, 1024)) and busy slots per instance; b changes it."""

    BINDINGS: ClassVar[list[BindingType]] = panel_bindings("batch")

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
            if inst.is_gateway:  # no batch, no slots: it forwards to the instances listed here
                continue
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
