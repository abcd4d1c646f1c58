"""The Horde contribution view (H): every worker, kudos and jobs over time, recent jobs.

Many people run the panel to watch what their machine gives the Horde. The dashboard
card shows one worker; this view shows all of them side by side, how kudos and jobs grew
while the panel was open (the panel keeps the history: the worker reports totals), the
jobs the worker lists, and what it can honestly say about requests it did not get.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Sparkline, Static

from koboldtui.tui import gauges
from koboldtui.tui.backend import InstanceView
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.widgets.horde_panel import state_words

HISTORY_POINTS = 240  # 4 minutes at the default 1 s refresh


@dataclass
class WorkerHistory:
    """Kudos and jobs of one worker at each poll, oldest first (bounded)."""

    kudos: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    jobs: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    times: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    def per_minute(self, points: deque[float]) -> float:
        """Growth per minute over the kept history, by the poll times."""
        if len(points) < 2 or len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (points[-1] - points[0]) * 60.0 / (self.times[-1] - self.times[0])


class HordeHistory:
    """What the panel saw of each worker since it opened (the worker itself reports totals)."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerHistory] = {}

    def record(self, instances: Iterable[InstanceView], now: float) -> None:
        """Add one point (at ``now``, the poll's time) per instance that runs a worker."""
        for inst in instances:
            horde = inst.horde
            if not horde or horde.get("state") in (None, "off", "disabled"):
                continue
            history = self.workers.setdefault(inst.name, WorkerHistory())
            history.kudos.append(_float(horde.get("kudos_session")))
            history.jobs.append(_float(horde.get("jobs_done")))
            history.times.append(now)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def honest_lines(horde: dict[str, Any]) -> list[str]:
    """What the worker can say about requests it did not get, without guessing."""
    lines = []
    pops, empty = int(_float(horde.get("pops"))), int(_float(horde.get("empty_pops")))
    if pops:
        lines.append(f"asked the Horde {pops} times; {empty} times there was no job this worker could take")
    skipped = horde.get("skipped") or {}
    if isinstance(skipped, dict) and skipped:
        reasons = ", ".join(f"{gauges.plain(k)} {v}" for k, v in sorted(skipped.items()))
        lines.append(f"the Horde's last reasons for passing it by: {reasons}")
    if _float(horde.get("remaining_s")) > 0:
        lines.append(f"not asking now: a local request {_float(horde.get('remaining_s')):.0f} s ago has priority")
    return lines or ["nothing reported yet"]


def held_words(job: dict[str, Any]) -> str:
    """'held 6.2s of 150s ttl': the job's time in our hands; '-' from a worker that did not say."""
    held, ttl = job.get("held_s"), job.get("ttl_s")
    if not isinstance(held, (int, float)):
        return "held -"
    words = f"held {held:.1f}s"
    return words + (f" of {ttl:.0f}s ttl" if isinstance(ttl, (int, float)) and ttl > 0 else "")


class HordeScreen(PanelModal[None]):
    """All Horde workers, their growth while the panel was open, and their recent jobs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,H", "close", "Close", id="horde-view-close", tooltip="Back to the dashboard"),
    ]

    def __init__(self, instances: tuple[InstanceView, ...], history: HordeHistory) -> None:
        super().__init__(classes="modal")
        self.instances = instances
        self.history = history

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full", id="horde-view"):
            yield Static("[b]Horde contribution[/]  [$text-muted]esc closes · the panel keeps the history while open[/]")
            yield DataTable(id="horde-workers", cursor_type="row", zebra_stripes=False)
            with VerticalScroll(id="horde-view-body"):
                for inst in self._workers():
                    history = self.history.workers.get(inst.name, WorkerHistory())
                    yield Static(
                        f"[b]{gauges.plain(inst.name)}[/]  kudos +{history.per_minute(history.kudos):.1f}/min"
                        f" · jobs +{history.per_minute(history.jobs):.2f}/min while the panel watched", classes="horde-view-heading")
                    with Horizontal(classes="horde-sparks"):
                        yield Static("kudos", classes="spark-label")
                        yield Sparkline(list(history.kudos) or [0.0], classes="kudos-spark")
                        yield Static("jobs", classes="spark-label")
                        yield Sparkline(list(history.jobs) or [0.0], classes="jobs-spark")
                    yield Static("\n".join(self._job_lines(inst)), classes="horde-jobs")
                    yield Static("[$text-muted]" + "\n".join(honest_lines(inst.horde)) + "[/]",
                                 classes="horde-honest")
                if not self._workers():
                    yield Static("[$text-muted]No instance runs a Horde worker: turn it on in the instance form"
                                 " (e), then w starts it.[/]")

    def _workers(self) -> list[InstanceView]:
        return [i for i in self.instances if i.horde and i.horde.get("state") not in (None, "off", "disabled")]

    def _job_lines(self, inst: InstanceView) -> list[str]:
        jobs = inst.horde.get("recent_jobs")
        if not isinstance(jobs, list) or not jobs:
            return ["[$text-muted]recent jobs: this worker lists none yet[/]"]
        models = inst.horde.get("models") or []
        worker_model = str(models[0]) if isinstance(models, list) and models else "?"
        lines = [("[b]recent jobs[/]  [$text-muted]newest first: model · tokens · tok/s · kudos · in our hands"
                  " (pop → submit) of the job's ttl · result[/]"),
                 ("[$text-muted]  requester wait is not shown: the Horde does not tell a worker how long the"
                  " request queued before the pop[/]")]
        for job in jobs[-6:][::-1]:
            if isinstance(job, dict):
                ok = job.get("state") == "ok"
                result = "ok" if ok else f"[$error]{gauges.plain(job.get('state', '?'))}[/]"
                model = str(job.get("model") or worker_model).rsplit("/", 1)[-1]
                model = model if len(model) <= 24 else model[:23] + "…"
                lines.append(
                    f"  {gauges.plain(model):24s} {int(_float(job.get('tokens'))):5d} tokens"
                    f" · {_float(job.get('tokens_per_s')):5.1f} tok/s · {_float(job.get('kudos')):6.1f} kudos"
                    f" · {held_words(job)} · {result}"
                )
        return lines

    def on_mount(self) -> None:
        table = self.query_one("#horde-workers", DataTable)
        table.add_columns("instance", "state", "local priority", "jobs", "faulted", "kudos", "total", "tok/s")
        for inst in self._workers():
            h = inst.horde
            remaining = _float(h.get("remaining_s"))
            table.add_row(
                gauges.plain(inst.name), gauges.plain(state_words(str(h.get("state")))),
                f"{remaining:.0f}s" if remaining > 0 else "-",
                str(int(_float(h.get("jobs_done")))), str(int(_float(h.get("jobs_faulted")))),
                f"{_float(h.get('kudos_session')):,.0f}",
                f"{_float(h.get('kudos_total')):,.0f}" if h.get("kudos_total") is not None else "-",
                f"{_float(h.get('tokens_per_s')):.1f}",
            )
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
