"""One instance in full (Enter on its row): settings, state, the last error and the log tail.

When an instance fails, the row can only hold a few words; this pane holds the exit
code, the supervisor's message and the last log lines, wrapped so nothing is off-screen.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import InstanceDraft, InstanceView, PanelBackend
from koboldtui.tui.failure_reason import split_error
from koboldtui.tui.screens.log_view import line_level
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.instance_tables import cache_cell, tokens_per_s_cell

TAIL_LINES = 40


def spec_lines(draft: InstanceDraft | None, inst: InstanceView) -> list[str]:
    """The settings that decide how the instance runs, in the form's words (a command
    instance: its command line; a remote: its URL; never serve-only settings for them)."""
    where = f"requests   {gauges.plain(inst.url)}" if inst.url else f"port       {inst.port}"
    if draft is None:
        return [where, f"model {gauges.plain(inst.model)} · GPUs {gauges.plain(inst.gpus)}"]
    c = draft.config
    restart = f"restart    {'after a crash' if draft.auto_restart else 'never'}"
    if draft.kind == "remote":
        return ["kind       remote: watched, never started here", f"url        {gauges.plain(draft.url)}"]
    if draft.kind == "command":
        return [
            where,
            "kind       command (any server; {port} and {model} filled in, no shell)",
            f"command    {gauges.plain(draft.command)}",
            f"health     {gauges.plain(draft.health or 'the first known path that answers 200')}",
            f"GPUs       {gauges.plain(inst.gpus)}",
            restart,
        ]
    horde = (f"on as {gauges.plain(c.horde.worker_name or '?')} (window {c.horde.window_s:g} s)"
             if c.horde.enabled else "off")
    return [
        where,
        f"model      {gauges.plain(c.model or 'bundled (Gemma 3 270M)')}",
        f"port       {c.port} on {gauges.plain(c.host)}   GPUs {gauges.plain(inst.gpus)}   gpu layers {c.gpu_layers}",
        (f"context    {c.ctx}   parallel slots {c.parallel}   batch size {c.batch_size}"
         f"   threads {c.threads if c.threads else 'auto'}"),
        f"Horde      {horde}",
        restart,
    ]


def detail_keys(inst: InstanceView) -> str:
    """The keys the details offer for this instance: only those that can work on it."""
    keys = ["l log"]
    if inst.state == "failed":
        keys.append("d dismiss")
    if inst.kind != "remote" and not inst.running:
        keys.append("s start")
    keys += ["e edit", "esc close"]
    return " · ".join(keys)


def usage_line(inst: InstanceView) -> str:
    """What a running instance uses and does, as the instance table shows it (which drops
    these columns first on a narrow terminal): uptime, RSS, CPU, tok/s, cached prompt tokens."""
    parts = [f"up {gauges.duration(inst.uptime_s)}", f"RSS {gauges.size(inst.rss_bytes)}",
             f"CPU {gauges.maybe(inst.cpu_pct, '.0f', '-')}%", f"{tokens_per_s_cell(inst)} tok/s",
             f"cached {cache_cell(inst)}"]
    if inst.status is not None:
        totals = inst.status.engine.totals
        parts.append(f"requests {totals.requests} ({totals.completed} done, {totals.aborted} aborted)")
    return " · ".join(parts)


def error_lines(inst: InstanceView) -> list[str]:
    """The supervisor's last word on a failure, and the log lines it kept."""
    if not inst.last_error:
        return ["[$text-muted]no error recorded[/]"]
    message, tail = split_error(inst.last_error)
    lines = [f"[b $error]{gauges.plain(message or 'failed')}[/]"]
    for line in tail:
        level = line_level(line)
        lines.append(f"[${level}]{gauges.plain(line)}[/]" if level else gauges.plain(line))
    return lines


class InstanceDetailScreen(PanelModal[str | None]):
    """Returns the key the person chose to act on ('log', 'start', 'edit', 'dismiss') or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close", id="detail-close", tooltip="Close the details"),
        Binding("l", "choose('log')", "Log", id="detail-log", tooltip="Open the whole log"),
        Binding("s", "choose('start')", "Start", id="detail-start", tooltip="Start the instance"),
        Binding("e", "choose('edit')", "Edit", id="detail-edit", tooltip="Edit the instance's settings"),
        Binding("d", "choose('dismiss')", "Dismiss", id="detail-dismiss",
                tooltip="Dismiss a failure (the row goes back to stopped; the log keeps it)"),
    ]

    def __init__(self, backend: PanelBackend, inst: InstanceView) -> None:
        super().__init__(classes="modal")
        self.backend = backend
        self.inst = inst
        self.tail: list[str] = []

    def compose(self) -> ComposeResult:
        inst = self.inst
        state = f"[b $error]{inst.state}[/]" if inst.state == "failed" else f"[b]{inst.state}[/]"
        with Vertical(classes="dialog full", id="detail"):
            yield Static(
                f"[b]{gauges.plain(inst.name)}[/] · {state} · restarts {inst.restarts}"
                + (f" · pid {inst.pid}" if inst.pid else "")
                + f"  [$text-muted]{detail_keys(inst)}[/]",
                id="detail-title",
            )
            with VerticalScroll(id="detail-body"):
                if inst.running:
                    yield Static(usage_line(inst), id="detail-usage")
                yield Static("[$text-muted]reading the settings…[/]", id="detail-spec")
                yield Static("[b]Last error[/]", classes="detail-heading")
                yield Static("\n".join(error_lines(inst)), id="detail-error")
                yield Static(f"[b]Log[/] [$text-muted](last {TAIL_LINES} lines)[/]", classes="detail-heading")
                yield Static("[$text-muted]reading the log…[/]", id="detail-log")

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="detail-load", exit_on_error=False)
    def _load(self) -> None:
        try:
            draft: InstanceDraft | None = self.backend.draft_for(self.inst.name)
        except Exception:  # noqa: BLE001 - the pane still shows what the poll knows
            draft = None
        try:
            tail = self.backend.log_tail(self.inst.name, TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            tail = [f"cannot read the log: {exc}"]
        self.from_thread(self._fill, draft, tail)

    def _fill(self, draft: InstanceDraft | None, tail: list[str]) -> None:
        if not self.is_attached:
            return
        self.tail = tail
        self.query_one("#detail-spec", Static).update("\n".join(spec_lines(draft, self.inst)))
        shown = []
        for line in tail:
            level = line_level(line)
            shown.append(f"[${level}]{gauges.plain(line)}[/]" if level else gauges.plain(line))
        self.query_one("#detail-log", Static).update("\n".join(shown) or "[$text-muted]the log is empty[/]")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys the title offers: no start for a remote or running instance, no
        dismiss without a failure."""
        if action == "choose" and parameters:
            what = parameters[0]
            if what == "start" and (self.inst.kind == "remote" or self.inst.running):
                return False
            if what == "dismiss" and self.inst.state != "failed":
                return False
        return super().check_action(action, parameters)

    def action_choose(self, what: str) -> None:
        self.dismiss(what)

    def action_close(self) -> None:
        self.dismiss(None)
